package config

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v4"
)

// This file walks the YAML tree as the decoder will see it: aliases
// followed, merge keys (<<: *anchor) applied. It checks the tree's shape
// against the Go types and finds the node written at a field path, so every
// error can point at a line and column.

// pair is one key: value of a mapping as the decoder sees it.
type pair struct {
	key, val *yaml.Node
	// via is the alias of the merge key that brought the pair in (nil for
	// a key written in the mapping itself).
	via *yaml.Node
}

// isMergeKey recognises the key of a YAML merge (<<), not a quoted "<<".
func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "!!merge" || k.Tag == "tag:yaml.org,2002:merge" ||
		k.Tag == "" && k.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) == 0)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// effectivePairs lists a mapping's pairs as the decoder applies them: the
// keys written in the mapping, in file order (repeats included, for the
// shape check to report), then the pairs merge keys bring in for keys the
// mapping does not set; among merged mappings the earlier one wins, as the
// YAML merge-key specification says. bad (may be nil) hears of merge keys
// whose value is not a mapping or a list of mappings.
func effectivePairs(m *yaml.Node, bad func(at *yaml.Node, msg string)) []pair {
	var merges []*yaml.Node
	out := make([]pair, 0, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, val := m.Content[i], m.Content[i+1]
		if isMergeKey(k) {
			if len(merges) > 0 && bad != nil {
				bad(k, "a second merge key in one mapping: list the anchors in one instead, e.g. <<: [*a, *b]")
			}
			merges = append(merges, val)
			continue
		}
		out = append(out, pair{key: k, val: val})
	}
	if len(merges) == 0 {
		return out
	}
	have := make(map[string]bool, len(out))
	for _, p := range out {
		have[p.key.Value] = true
	}
	var sources, vias []*yaml.Node
	for _, mv := range merges {
		src := resolve(mv)
		switch {
		case src != nil && src.Kind == yaml.MappingNode:
			sources, vias = append(sources, src), append(vias, mv)
		case src != nil && src.Kind == yaml.SequenceNode:
			for _, el := range src.Content {
				if r := resolve(el); r != nil && r.Kind == yaml.MappingNode {
					sources, vias = append(sources, r), append(vias, el)
				} else if bad != nil {
					bad(el, "a merge key's list may only hold aliases of mappings (<<: [*a, *b])")
				}
			}
		default:
			if bad != nil {
				bad(mv, "a merge key needs an alias of a mapping, or a list of them (<<: *defaults)")
			}
		}
	}
	for i, src := range sources {
		for _, p := range effectivePairs(src, nil) {
			if have[p.key.Value] {
				continue
			}
			have[p.key.Value] = true
			if p.via == nil {
				p.via = vias[i]
			}
			out = append(out, p)
		}
	}
	return out
}

// lookup finds the value written at a field path such as
// "sites[1].targets[0].interval": the value node (aliases followed), the key
// that names it (nil for list elements) and the innermost alias crossed to
// get there. All are nil when the file does not write that path.
func (v *validator) lookup(path string) (val, key, via *yaml.Node) {
	n := v.doc
	for path != "" {
		if n.Kind == yaml.AliasNode {
			via, n = n, resolve(n)
		}
		if path[0] == '[' {
			j := strings.IndexByte(path, ']')
			if j < 0 {
				return nil, nil, nil
			}
			idx, err := strconv.Atoi(path[1:j])
			path = path[j+1:]
			if err != nil || n.Kind != yaml.SequenceNode || idx < 0 || idx >= len(n.Content) {
				return nil, nil, nil
			}
			n, key = n.Content[idx], nil
			continue
		}
		path = strings.TrimPrefix(path, ".")
		j := strings.IndexAny(path, ".[")
		if j < 0 {
			j = len(path)
		}
		name := path[:j]
		path = path[j:]
		if n.Kind != yaml.MappingNode {
			return nil, nil, nil
		}
		k, val, merged := findKey(n, name)
		if k == nil {
			return nil, nil, nil
		}
		n, key = val, k
		if merged != nil {
			via = merged
		}
	}
	if n.Kind == yaml.AliasNode {
		via, n = n, resolve(n)
	}
	return n, key, via
}

// findKey finds a key of a mapping as the decoder applies it (merge keys
// included); merged is the alias that brought it in, if any. Lookups run
// for every target, so the common case allocates nothing.
func findKey(m *yaml.Node, name string) (key, val, merged *yaml.Node) {
	hasMerge := false
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Value == name && !isMergeKey(k) {
			return k, m.Content[i+1], nil
		}
		hasMerge = hasMerge || isMergeKey(k)
	}
	if !hasMerge {
		return nil, nil, nil
	}
	for _, p := range effectivePairs(m, nil) {
		if p.key.Value == name {
			return p.key, p.val, p.via
		}
	}
	return nil, nil, nil
}

var durationType = reflect.TypeOf(Duration(0))

// removedFields explains keys that earlier versions accepted and ignored:
// strict decoding refuses them now, with the reason.
var removedFields = map[reflect.Type]map[string]string{
	reflect.TypeOf(Target{}): {
		"name":   "targets have no name (it was accepted and never used); a target's series are labelled by its address, path and segment",
		"labels": "targets have no labels (they were accepted and never used); use path and segment",
	},
	reflect.TypeOf(Site{}): {
		"labels": "sites have no labels (they were accepted and never used); the site's name labels its series",
	},
}

// checkShape walks the YAML tree against the Go type: unknown keys, wrong
// kinds and unparsable scalars are reported with their line and field path.
// The YAML library's own strict mode does not reach into custom
// unmarshalers, nor name the field path, hence this.
func (v *validator) checkShape(n *yaml.Node, t reflect.Type) {
	n = resolve(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return
	}
	if t == durationType {
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, v.shapeAt(), "expected a duration such as 1s or 500ms, got %s", kindName(n))
			return
		}
		if _, err := ParseDuration(n.Value); err != nil {
			v.errorf(n, v.shapeAt(), "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			v.errorf(n, v.shapeAt(), "expected a mapping (key: value lines), got %s", kindName(n))
			return
		}
		fields := yamlFields(t)
		var seenBuf [24]string // more than any struct of Config has fields
		seen := seenBuf[:0]
		bad := func(m *yaml.Node, msg string) { v.errorf(m, join(v.shapeAt(), "<<"), "%s", msg) }
		for _, p := range effectivePairs(n, bad) {
			k := p.key
			if k.Kind != yaml.ScalarNode {
				v.errorf(k, v.shapeAt(), "a key must be a plain name, got %s", kindName(k))
				continue
			}
			v.shape = append(v.shape, pathElem{key: shortKey(k)})
			f, known := fields[k.Value]
			switch {
			case slices.Contains(seen, k.Value):
				v.errorf(k, v.shapeAt(), "key written twice")
			case !known:
				seen = append(seen, k.Value)
				if why, ok := removedFields[t][k.Value]; ok {
					v.errorf(k, v.shapeAt(), "unknown field %s: %s", quote(k.Value), why)
				} else {
					v.errorf(k, v.shapeAt(), "unknown field %s%s", quote(k.Value), suggest(k.Value, fields))
				}
			default:
				seen = append(seen, k.Value)
				v.checkShape(p.val, f.Type)
			}
			v.shape = v.shape[:len(v.shape)-1]
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			v.errorf(n, v.shapeAt(), "expected a list, got %s", kindName(n))
			return
		}
		for i, c := range n.Content {
			v.shape = append(v.shape, pathElem{idx: i, elem: true})
			v.checkShape(c, t.Elem())
			v.shape = v.shape[:len(v.shape)-1]
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, v.shapeAt(), "expected a string, got %s", kindName(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			v.errorf(n, v.shapeAt(), "expected true or false, got %s", kindName(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, v.shapeAt(), "expected an integer, got %s", kindName(n))
			return
		}
		if _, err := strconv.ParseInt(n.Value, 0, t.Bits()); err != nil {
			v.errorf(n, v.shapeAt(), "expected an integer, got %s", quote(n.Value))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, v.shapeAt(), "expected an integer, got %s", kindName(n))
			return
		}
		if _, err := strconv.ParseUint(n.Value, 0, t.Bits()); err != nil {
			v.errorf(n, v.shapeAt(), "expected an integer from 0 to %d, got %s", uint64(1)<<t.Bits()-1, quote(n.Value))
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			v.errorf(n, v.shapeAt(), "expected a number, got %s", kindName(n))
			return
		}
		if _, err := strconv.ParseFloat(n.Value, 64); err != nil {
			v.errorf(n, v.shapeAt(), "expected a number, got %s", quote(n.Value))
		}
	default:
		// Every field type of Config is handled above; a new one must be
		// added here rather than slip past the check.
		v.errorf(n, v.shapeAt(), "internal error: no shape check for %s", t)
	}
}

// pathElem is one step of the shape check's field path (validator.shape):
// a stack rendered only when an error names it, since the check visits
// every key of a 10,000-target file on each reload.
type pathElem struct {
	key  string
	idx  int
	elem bool // a list element idx, not the field key
}

// shapeAt is the field path the shape check is at.
func (v *validator) shapeAt() string {
	var b strings.Builder
	for _, e := range v.shape {
		switch {
		case e.elem:
			b.WriteString("[" + strconv.Itoa(e.idx) + "]")
		case b.Len() > 0:
			b.WriteString("." + e.key)
		default:
			b.WriteString(e.key)
		}
	}
	return b.String()
}

// shortKey is a key for a field path: long or odd keys are cut so that a
// path stays readable.
func shortKey(k *yaml.Node) string {
	if k.Kind != yaml.ScalarNode {
		return "?"
	}
	if len(k.Value) > maxQuoted {
		return quote(k.Value)
	}
	return k.Value
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return quote(n.Value)
	}
	return "something else"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldCache holds yamlFields per type: the shape check asks once per
// mapping, which is once per target.
var fieldCache sync.Map // reflect.Type -> map[string]reflect.StructField

// yamlFields maps the yaml keys of a struct type to its fields, following
// inline embedded structs. The map is shared: do not modify it.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.StructField)
	}
	m := structFields(t)
	fieldCache.Store(t, m)
	return m
}

func structFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			for k, v := range structFields(f.Type) {
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
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestD := "", 3
	if len(key) <= 2*maxQuoted { // a huge key is no typo
		for _, k := range names {
			if d := editDistance(key, k); d < bestD {
				best, bestD = k, d
			}
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

// Aliases may share values, not multiply them. The classic attack (and the
// classic accident) is an anchor whose value holds aliases of another
// anchor, nested a few times: a few KB that expand to millions of values
// and take gigabytes to check. The expanded document may hold at most
// expansionFactor times the values written, or expansionAllowance more,
// whichever is larger: merging a defaults mapping into every target of a
// large mesh stays well inside, and the worst file under the limit is
// checked in a fraction of a second.
const (
	expansionFactor    = 10
	expansionAllowance = 20_000
)

// checkExpansion counts the document's values with every alias expanded,
// without expanding anything, and refuses a document that grows too much or
// holds an alias inside the value it names (which never ends).
func (v *validator) checkExpansion() *Error {
	if !hasAlias(v.doc) {
		return nil // nothing expands; skip the bookkeeping (a reload of 10,000 targets)
	}
	x := &expansion{size: map[*yaml.Node]int{}, open: map[*yaml.Node]bool{}}
	total := x.count(v.doc)
	if x.cycle != nil {
		return &Error{File: v.file, Line: x.cycle.Line, Col: x.cycle.Column, Field: v.pathOf(x.cycle),
			Msg: fmt.Sprintf("alias *%s is used inside the value it names: it would repeat without end", x.cycle.Value)}
	}
	written := len(x.size)
	limit := max(expansionFactor*written, written+expansionAllowance)
	if total <= limit {
		return nil
	}
	// Point at the alias that repeats the most (the first of them).
	var worst *yaml.Node
	for _, a := range x.aliases {
		if worst == nil || x.size[a.Alias] > x.size[worst.Alias] {
			worst = a
		}
	}
	if worst == nil { // cannot be: without aliases nothing expands
		return &Error{File: v.file, Msg: fmt.Sprintf("the document expands to %s values; at most %d are allowed", x.countText(total), limit)}
	}
	return &Error{File: v.file, Line: worst.Line, Col: worst.Column, Field: v.pathOf(worst),
		Msg: fmt.Sprintf("aliases expand the file to %s values (it writes %d; at most %d are allowed): this alias *%s alone repeats %d; aliases may share values, not multiply them",
			x.countText(total), written, limit, worst.Value, x.size[worst.Alias])}
}

// hasAlias reports whether the tree holds an alias anywhere.
func hasAlias(n *yaml.Node) bool {
	if n == nil {
		return false
	}
	if n.Kind == yaml.AliasNode {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

type expansion struct {
	size    map[*yaml.Node]int // expanded size of each written node
	open    map[*yaml.Node]bool
	aliases []*yaml.Node // in document order
	cycle   *yaml.Node
}

// cap keeps counts from overflowing; any count this large is refused anyway.
func (x *expansion) cap() int { return 1 << 40 }

func (x *expansion) countText(n int) string {
	if n >= x.cap() {
		return fmt.Sprintf("more than %d", x.cap())
	}
	return strconv.Itoa(n)
}

func (x *expansion) count(n *yaml.Node) int {
	if s, ok := x.size[n]; ok {
		return s
	}
	if x.open[n] {
		return 0 // reached again through an alias: see the alias case
	}
	x.open[n] = true
	s := 1
	if n.Kind == yaml.AliasNode {
		x.aliases = append(x.aliases, n)
		if n.Alias != nil {
			if x.open[n.Alias] {
				if x.cycle == nil {
					x.cycle = n
				}
			} else {
				s = x.count(n.Alias)
			}
		}
	}
	for _, c := range n.Content {
		s = min(s+x.count(c), x.cap())
	}
	delete(x.open, n)
	x.size[n] = s
	return s
}

// pathOf is the field path of a written node, found without following
// aliases (for messages about an alias itself).
func (v *validator) pathOf(target *yaml.Node) string {
	var walk func(n *yaml.Node, path string) (string, bool)
	walk = func(n *yaml.Node, path string) (string, bool) {
		if n == target {
			return path, true
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if p, ok := walk(n.Content[i+1], join(path, shortKey(n.Content[i]))); ok {
					return p, true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if p, ok := walk(c, fmt.Sprintf("%s[%d]", path, i)); ok {
					return p, true
				}
			}
		}
		return "", false
	}
	p, _ := walk(v.doc, "")
	return p
}
