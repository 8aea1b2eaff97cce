package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"
)

// MaxConfigFileSize is the largest config file LoadConfigFile reads. A
// config file is a few lines; anything near this is the wrong file.
const MaxConfigFileSize = 1 << 20

// ErrEmptyConfigFile is returned for a config file that sets nothing.
var ErrEmptyConfigFile = errors.New("the file sets nothing (empty, or only comments); " +
	"refused: a file truncated mid-deploy is the usual cause (to run on the defaults, drop --config)")

// LoadConfigFile reads the YAML file at path and applies the keys it sets
// on top of cfg. Only a regular file of at most MaxConfigFileSize bytes is
// read: a fifo, a device or a directory is refused at once, without
// waiting for a writer.
func LoadConfigFile(path string, cfg *Config) error {
	data, err := readConfigFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := ParseConfigFile(data, cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// readConfigFile returns the content of the regular file at path.
func readConfigFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a fifo for reading would otherwise wait for a
	// writer. It changes nothing for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (it is %s)", path, fileKind(fi.Mode()))
	}
	// The size may change under us: read one byte past the limit rather
	// than trust Stat.
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxConfigFileSize {
		return nil, fmt.Errorf("%s is larger than 1 MiB; a config file is a few lines (is it the right file?)", path)
	}
	return data, nil
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a fifo"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file"
}

// ParseConfigFile applies the keys set in the YAML document data on top of
// cfg. The keys are the settings' names (see Settings); each value is read
// by the same parser as its flag. An unknown or repeated key, a value of
// the wrong shape, a bad value or a second document is an error of one
// line that names the line of the file; cfg is only changed when there is
// none. A file that sets nothing (empty, blank, only comments, or only
// "~") is ErrEmptyConfigFile: a config file truncated by a deploy would
// otherwise move the service to the defaults. An empty mapping ({}) says
// "defaults" on purpose and is accepted; a key with no value changes
// nothing.
func ParseConfigFile(data []byte, cfg *Config) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return ErrEmptyConfigFile // a tab alone is no YAML, but no less empty
	}
	root, err := decodeOne(data)
	if err != nil {
		return err
	}
	if root == nil || isNull(resolve(root)) {
		return ErrEmptyConfigFile
	}
	next := *cfg
	if err := applyMapping(root, &next); err != nil {
		return err
	}
	*cfg = next
	return nil
}

// decodeOne returns the content of the only document in data, or nil for
// a file with none.
func decodeOne(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err // yaml's own message names the line
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		// A second document would be silently ignored by a reader that
		// stops at the first; the operator meant something by it.
		return nil, errors.New("more than one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// applyMapping sets on cfg each key of the mapping n.
func applyMapping(n *yaml.Node, cfg *Config) error {
	if n == nil {
		return nil
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: the file must map keys to values (workers: 4), not be %s", n.Line, shape(n))
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: a key must be a name such as workers, not %s", k.Line, shape(k))
		}
		s, err := keySetting(k)
		if err != nil {
			return err
		}
		if first, ok := seen[k.Value]; ok {
			return fmt.Errorf("line %d: key %q is set twice (first at line %d)", k.Line, k.Value, first)
		}
		seen[k.Value] = k.Line
		// The line of the value as written, not of the anchor an alias
		// points at.
		if err := setNode(s, resolve(v), cfg); err != nil {
			return fmt.Errorf("line %d: %w", v.Line, err)
		}
	}
	return nil
}

// keySetting finds the setting a key names, or says what is wrong with it.
func keySetting(k *yaml.Node) (Setting, error) {
	s, ok := lookupSetting(k.Value)
	switch {
	case ok && s.Key:
		return s, nil
	case ok:
		return s, fmt.Errorf("unknown key %q at line %d: --%s is a flag, not a key", k.Value, k.Line, s.Name)
	}
	if near := suggestKey(k.Value); near != "" {
		return s, fmt.Errorf("unknown key %q at line %d; did you mean %q?", k.Value, k.Line, near)
	}
	return s, fmt.Errorf("unknown key %q at line %d", k.Value, k.Line)
}

// setNode sets the setting s from the value v.
func setNode(s Setting, v *yaml.Node, cfg *Config) error {
	if isNull(v) {
		return nil // "workers:" alone: as if the key were absent
	}
	if s.bind.setList != nil && (v.Kind == yaml.SequenceNode || s.bind.set == nil) {
		if v.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: must be a list such as [prog, arg], not %s", s.Name, shape(v))
		}
		list := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("%s: item at line %d must be a single value, not %s", s.Name, item.Line, shape(item))
			}
			if isNull(item) {
				list = append(list, "")
				continue
			}
			list = append(list, item.Value)
		}
		return s.bind.setList(cfg, list)
	}
	if s.bind.setMap != nil {
		m, err := stringMap(s.Name, v)
		if err != nil {
			return err
		}
		return s.bind.setMap(cfg, m)
	}
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: must be a single value, not %s", s.Name, shape(v))
	}
	return s.Set(cfg, v.Value)
}

// stringMap reads a mapping of names to single values (env:); a value
// left empty is "".
func stringMap(name string, v *yaml.Node) (map[string]string, error) {
	if v.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: must map names to values (NAME: value), not %s", name, shape(v))
	}
	m := make(map[string]string, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := resolve(v.Content[i]), resolve(v.Content[i+1])
		if k.Kind != yaml.ScalarNode || isNull(k) {
			return nil, fmt.Errorf("%s: a name at line %d must be a single value, not %s", name, k.Line, shape(k))
		}
		if _, twice := m[k.Value]; twice {
			return nil, fmt.Errorf("%s: %s is set twice (line %d)", name, k.Value, k.Line)
		}
		switch {
		case isNull(val):
			m[k.Value] = ""
		case val.Kind == yaml.ScalarNode:
			m[k.Value] = val.Value
		default:
			return nil, fmt.Errorf("%s: %s at line %d must be a single value, not %s", name, k.Value, val.Line, shape(val))
		}
	}
	return m, nil
}

// resolve follows an alias (*name) to the node it stands for.
func resolve(n *yaml.Node) *yaml.Node {
	// An anchor cannot sit on an alias, so one step is all there is; the
	// bound only guards against a malformed tree.
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// shape names a node's kind as an operator would.
func shape(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return fmt.Sprintf("the single value %q", n.Value)
	}
	return "empty"
}

// suggestKey returns the key an unknown key was most likely meant to be:
// one at most two edits away (the nearest, earliest in the table on a
// tie), else the only key sharing a prefix of four or more characters with
// it; "" when none is close.
func suggestKey(unknown string) string {
	u := strings.ToLower(unknown)
	best, bestDist := "", 3
	var prefixed []string
	for _, s := range settings {
		if !s.Key {
			continue
		}
		if d := editDistance(u, s.Name, bestDist); d < bestDist {
			best, bestDist = s.Name, d
		}
		if commonPrefix(u, s.Name) >= 4 {
			prefixed = append(prefixed, s.Name)
		}
	}
	if best != "" {
		return best
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	return ""
}

// editDistance is the Levenshtein distance of a and b, or limit when it is
// limit or more: a key far longer than any name is not compared in full.
func editDistance(a, b string, limit int) int {
	if len(a)-len(b) >= limit || len(b)-len(a) >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
