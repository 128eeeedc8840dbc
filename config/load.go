package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a mesh file, located by line and column and named
// by the field's path (e.g. sites[1].targets[0].address).
type Error struct {
	File  string
	Line  int
	Col   int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads and validates a mesh file.
func Load(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	return Parse(data, file)
}

// Parse decodes and validates a mesh file's contents; file names it in errors.
func Parse(data []byte, file string) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{File: file, Msg: "empty mesh: the file has no content"}}
		}
		return nil, Errors{yamlSyntaxError(file, err)}
	}
	if len(root.Content) == 0 {
		return nil, Errors{{File: file, Msg: "empty mesh: the file has no content"}}
	}
	doc := root.Content[0]
	v := &validator{file: file, pos: map[string]*yaml.Node{}}
	v.checkShape(doc, reflect.TypeOf(Config{}), "")
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	cfg := &Config{File: file, root: doc}
	if err := doc.Decode(cfg); err != nil {
		// checkShape should have caught every type error; keep the
		// decoder's message if it did not.
		return nil, Errors{yamlSyntaxError(file, err)}
	}
	cfg.File = file
	v.validate(cfg)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return cfg, nil
}

// yamlSyntaxError turns a yaml.v3 error ("yaml: line 3: ...") into an Error.
func yamlSyntaxError(file string, err error) *Error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	line := 0
	if strings.HasPrefix(msg, "line ") {
		rest := msg[len("line "):]
		if i := strings.Index(rest, ":"); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line = n
				msg = strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return &Error{File: file, Line: line, Msg: msg}
}

// validator collects errors with positions.
type validator struct {
	file string
	errs Errors
	// pos maps a field path to the YAML node that holds its value.
	pos map[string]*yaml.Node
}

func (v *validator) errorf(n *yaml.Node, field, format string, args ...any) {
	e := &Error{File: v.file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	v.errs = append(v.errs, e)
}

// at reports an error on the field at path, using its recorded position,
// or the closest enclosing one that was written.
func (v *validator) at(path, format string, args ...any) {
	p := path
	for {
		if n, ok := v.pos[p]; ok {
			v.errorf(n, path, format, args...)
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			v.errorf(nil, path, format, args...)
			return
		}
		p = p[:i]
	}
}

var (
	durationType = reflect.TypeOf(Duration(0))
	nodeType     = reflect.TypeOf(yaml.Node{})
)

// checkShape walks the YAML tree against the Go type: unknown keys, wrong
// kinds and unparsable scalars are reported with their line and field path.
// yaml.v3's KnownFields does not reach into custom unmarshalers, hence this.
func (v *validator) checkShape(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	v.pos[path] = n
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch {
	case t == nodeType:
		return
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, path, "expected a duration such as 1s or 500ms")
			return
		}
		if _, err := ParseDuration(n.Value); err != nil {
			v.errorf(n, path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			v.errorf(n, path, "expected a mapping (key: value lines), got %s", kindName(n))
			return
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			fp := join(path, k.Value)
			if seen[k.Value] {
				v.errorf(k, fp, "key written twice")
				continue
			}
			seen[k.Value] = true
			f, ok := fields[k.Value]
			if !ok {
				v.errorf(k, fp, "unknown field %q%s", k.Value, suggest(k.Value, fields))
				continue
			}
			v.pos[fp+"#key"] = k
			v.checkShape(val, f.Type, fp)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			v.errorf(n, path, "expected a list, got %s", kindName(n))
			return
		}
		for i, c := range n.Content {
			v.checkShape(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			v.errorf(n, path, "expected a mapping, got %s", kindName(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v.checkShape(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, path, "expected a string, got %s", kindName(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!bool") {
			v.errorf(n, path, "expected true or false, got %q", n.Value)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, path, "expected an integer, got %s", kindName(n))
			return
		}
		if _, err := strconv.ParseInt(n.Value, 0, t.Bits()); err != nil {
			v.errorf(n, path, "expected an integer, got %q", n.Value)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, path, "expected an integer, got %s", kindName(n))
			return
		}
		if _, err := strconv.ParseUint(n.Value, 0, t.Bits()); err != nil {
			v.errorf(n, path, "expected an integer from 0 to %d, got %q", uint64(1)<<t.Bits()-1, n.Value)
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, path, "expected a number, got %s", kindName(n))
			return
		}
		if _, err := strconv.ParseFloat(n.Value, 64); err != nil {
			v.errorf(n, path, "expected a number, got %q", n.Value)
		}
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the yaml keys of a struct type to its fields, following
// inline embedded structs.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f
	}
	return m
}

// suggest names the closest known key, for typos like "tcp_port".
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return fmt.Sprintf(" (known fields: %s)", strings.Join(names, ", "))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
