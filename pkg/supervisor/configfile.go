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
	Watchdog     *duration `yaml:"watchdog"`
	MaxAccepts   *uint64   `yaml:"max-accepts"`
	MaxRSS       *size     `yaml:"max-rss"`
	User         *string   `yaml:"user"`
	Group        *string   `yaml:"group"`
	Steer        *string   `yaml:"steer"`
}

// size is a byte count written as ParseSize reads it, or a plain number.
type size uint64

func (z *size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*z = size(v)
	return nil
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
	if fc.Watchdog != nil {
		cfg.Watchdog = time.Duration(*fc.Watchdog)
	}
	if fc.MaxAccepts != nil {
		cfg.MaxAccepts = *fc.MaxAccepts
	}
	if fc.MaxRSS != nil {
		cfg.MaxRSS = uint64(*fc.MaxRSS)
	}
	if fc.User != nil {
		cfg.User = *fc.User
	}
	if fc.Group != nil {
		cfg.Group = *fc.Group
	}
	if fc.Steer != nil {
		cfg.Steer = *fc.Steer
	}
	if fc.Command != nil {
		cfg.Command = fc.Command
	}
}
