package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileConfig is the YAML form of Config: the same keys as the long flags.
// Pointers tell a key that is absent from one set to its zero value.
type fileConfig struct {
	Workers      *int      `yaml:"workers"`
	Listen       *string   `yaml:"listen"`
	ReadyTimeout *duration `yaml:"ready-timeout"`
	DrainTimeout *duration `yaml:"drain-timeout"`
	Sockets      *string   `yaml:"sockets"`
	LogFormat    *string   `yaml:"log-format"`
	Command      []string  `yaml:"command"`
	Control      *string   `yaml:"control"`
	Metrics      *string   `yaml:"metrics"`
}

type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = duration(v)
	return nil
}

// LoadConfigFile reads the YAML file at path and applies the keys it sets
// on top of cfg.
func LoadConfigFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := ParseConfigFile(data, cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// ParseConfigFile applies the keys set in the YAML document data on top of
// cfg. An unknown key, a value of the wrong type or a second document is an
// error; cfg is only changed when there is none.
func ParseConfigFile(data []byte, cfg *Config) error {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			// One line per problem is yaml's way; an operator gets one line.
			return errors.New(strings.Join(te.Errors, "; "))
		}
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	fc.applyTo(cfg)
	return nil
}

func (fc fileConfig) applyTo(cfg *Config) {
	if fc.Workers != nil {
		cfg.Workers = *fc.Workers
	}
	if fc.Listen != nil {
		cfg.Listen = *fc.Listen
	}
	if fc.ReadyTimeout != nil {
		cfg.ReadyTimeout = time.Duration(*fc.ReadyTimeout)
	}
	if fc.DrainTimeout != nil {
		cfg.DrainTimeout = time.Duration(*fc.DrainTimeout)
	}
	if fc.Sockets != nil {
		cfg.Sockets = *fc.Sockets
	}
	if fc.LogFormat != nil {
		cfg.LogFormat = *fc.LogFormat
	}
	if fc.Metrics != nil {
		cfg.Metrics = *fc.Metrics
	}
	if fc.Control != nil {
		cfg.Control = *fc.Control
	}
	if fc.Command != nil {
		cfg.Command = fc.Command
	}
}
