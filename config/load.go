package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v4"
	"go.yaml.in/yaml/v4/plugin/loaderlimits"
)

// MaxFileSize is the largest mesh file read. A 10,000-target mesh is about
// 300 KB, so a bigger file is almost surely the wrong one, and parsing it
// whole could take the agent's memory.
const MaxFileSize = 16 << 20

const (
	// maxShownErrors: past this many, Parse lists the first ones and counts
	// the rest (a repeated mistake must not print thousands of lines).
	maxShownErrors = 20
	// maxKeptErrors bounds the memory held by errors while validating.
	maxKeptErrors = 1000
	// maxQuoted is how many characters of a value a message quotes.
	maxQuoted = 64
	// maxMessage bounds one message whatever it quotes (YAML library
	// messages included), so a huge value never reaches a log whole.
	maxMessage = 512
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
	b.WriteString(truncate(e.Msg, maxMessage))
	return b.String()
}

// Errors is every problem found in one file, in file order. When there were
// more than a screenful, the last entry counts the ones left out.
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
	f, err := os.Open(file)
	if err != nil {
		return nil, readError(file, err)
	}
	defer f.Close()
	// Refuse an oversized file before reading it; the limited read also
	// covers files whose size Stat cannot tell (pipes, /proc).
	var buf bytes.Buffer
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if st.Size() > MaxFileSize {
			return nil, Errors{tooLarge(file, st.Size())}
		}
		buf.Grow(int(st.Size()) + bytes.MinRead) // one allocation, not a doubling series
	}
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return nil, readError(file, err)
	}
	return Parse(buf.Bytes(), file)
}

// readError is "FILE: reading the mesh file: REASON", like every other
// error about the file; the cause stays reachable (errors.Is(err, fs.ErrNotExist)).
func readError(file string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s: reading the mesh file: %w", file, err)
}

func tooLarge(file string, size int64) *Error {
	return &Error{File: file, Msg: fmt.Sprintf("the file is %.1f MiB, more than the %d MiB a mesh file may be (10,000 targets take about 0.3 MiB): is it the right file?",
		float64(size)/(1<<20), MaxFileSize>>20)}
}

// Parse decodes and validates a mesh file's contents; file names it in errors.
func Parse(data []byte, file string) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, Errors{tooLarge(file, int64(len(data)))}
	}
	if e := checkText(data, file); e != nil {
		return nil, Errors{e}
	}
	doc, e := parseDocument(data, file)
	if e != nil {
		return nil, Errors{e}
	}
	v := &validator{file: file, doc: doc}
	// Aliases are counted before anything follows them: a small file must
	// not expand into millions of values (see checkExpansion).
	if e := v.checkExpansion(); e != nil {
		return nil, Errors{e}
	}
	v.checkShape(doc, reflect.TypeOf(Config{}))
	if len(v.errs) > 0 {
		return nil, v.result()
	}
	cfg := &Config{}
	if err := doc.Load(cfg, noAliasLimit); err != nil {
		// checkShape should have caught every type error; keep the
		// decoder's message if it did not.
		return nil, Errors{syntaxError(file, data, err)}
	}
	// The YAML tree is not kept: a running agent holds only the Config.
	cfg.File = file
	v.validate(cfg)
	if len(v.errs) > 0 {
		return nil, v.result()
	}
	return cfg, nil
}

// noAliasLimit turns off the YAML library's alias heuristic, which refuses
// some small valid files (a list of targets shared by an alias): Parse
// bounds the aliases' expansion itself before decoding (checkExpansion).
var noAliasLimit = yaml.WithPlugin(loaderlimits.New(loaderlimits.AliasNone()))

// parseDocument parses the file's one YAML document and returns its root.
func parseDocument(data []byte, file string) (*yaml.Node, *Error) {
	l, err := yaml.NewLoader(bytes.NewReader(data))
	if err != nil {
		return nil, &Error{File: file, Msg: fmt.Sprintf("setting up the YAML parser: %v", err)}
	}
	var doc yaml.Node
	if err := l.Load(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: file, Msg: "empty mesh: the file has no content"}
		}
		return nil, syntaxError(file, data, err)
	}
	// A second document would be ignored by the decoder: it is most often
	// two files pasted together, or a '---' left in by a template.
	var next yaml.Node
	switch err := l.Load(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		e := syntaxError(file, data, err)
		e.Msg = "the file holds more than one YAML document (a mesh file is one), and the next one is malformed: " + e.Msg
		return nil, e
	default:
		line, col := next.Line, next.Column
		if line == 0 && len(next.Content) > 0 {
			line, col = next.Content[0].Line, next.Content[0].Column
		}
		return nil, &Error{File: file, Line: line, Col: col,
			Msg: "a second YAML document begins here: a mesh file is one document; remove this '---' and what follows it, or merge the two"}
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, &Error{File: file, Msg: "empty mesh: the file has no content"}
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// checkText finds what the YAML parser would refuse without saying where:
// bytes that are not UTF-8 and control characters (a NUL from a binary or
// a truncated copy). Files with a UTF-16 byte order mark are left to the
// parser, which decodes them.
func checkText(data []byte, file string) *Error {
	if bytes.HasPrefix(data, []byte{0xFE, 0xFF}) || bytes.HasPrefix(data, []byte{0xFF, 0xFE}) {
		return nil
	}
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return &Error{File: file, Line: line, Col: col,
				Msg: fmt.Sprintf("byte 0x%02X is not UTF-8: a mesh file is UTF-8 text", data[i])}
		case !yamlPrintable(r):
			name := ""
			if r == 0 {
				name = " (NUL: is this a binary or truncated file?)"
			}
			return &Error{File: file, Line: line, Col: col,
				Msg: fmt.Sprintf("control character %U%s is not allowed in YAML", r, name)}
		}
		switch {
		case r == '\n':
			line, col = line+1, 1
		case r == '\r':
			// CR LF is one line break; a lone CR is one too.
			if i+1 >= len(data) || data[i+1] != '\n' {
				line, col = line+1, 1
			}
		default:
			col++
		}
		i += size
	}
	return nil
}

// yamlPrintable is YAML 1.2's c-printable set.
func yamlPrintable(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || (r >= 0x20 && r <= 0x7E) || r == 0x85 ||
		(r >= 0xA0 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

// syntaxError turns a YAML library error into an Error at the position that
// names the mistake: for a construct left open (a '[' list, a '{' mapping, a
// quoted string, a key without ':') that is where it was opened, not where
// the parser gave up, which can be many lines further.
func syntaxError(file string, data []byte, err error) *Error {
	var le *yaml.LoadError
	if !errors.As(err, &le) {
		return legacyError(file, err)
	}
	e := &Error{File: file, Line: le.Mark.Line, Col: le.Mark.Column, Msg: le.Message}
	ctx := le.ContextMsg
	ctxLine, ctxCol := le.ContextMark.Line, le.ContextMark.Column
	gaveUp := fmt.Sprintf("line %d, column %d", le.Mark.Line, le.Mark.Column)
	if le.Mark.Line == 0 {
		gaveUp = "the end of the file"
	}
	atContext := func(msg string) {
		e.Line, e.Col = ctxLine, ctxCol
		e.Msg = msg
	}
	// A '[' or '{' open where the parser gave up, on an earlier line, and
	// never closed in the whole file is the mistake, whatever the parser
	// says it tripped on (often a block line read as part of the list).
	var unclosed *yaml.Mark
	if o := openFlow(data, le.Mark); o != nil && (o.Line < le.Mark.Line || le.Mark.Line == 0) {
		if end := openFlow(data, yaml.Mark{Line: 1 << 30}); end != nil && *end == *o {
			unclosed = o
		}
	}
	switch c := charAt(data, le.Mark.Line, le.Mark.Column); {
	case c == '\t' && (strings.Contains(le.Message, "tab") || strings.Contains(le.Message, "cannot start any token")):
		e.Msg = "a tab character here: YAML indents with spaces only"
	case (c == '@' || c == '`') && strings.Contains(le.Message, "cannot start any token"):
		e.Msg = fmt.Sprintf("a value cannot start with %q in YAML: quote it", c)
	case unclosed != nil:
		// The parser names the innermost flow node, or the list it is
		// in, or no context at all; the mistake is the bracket left open
		// on an earlier line.
		o := unclosed
		ctxLine, ctxCol = o.Line, o.Column
		what := "'[' list"
		if o.Index == '{' {
			what = "'{' mapping"
		}
		atContext(fmt.Sprintf("this %s is not closed: %s at %s", what, le.Message, gaveUp))
	case ctxLine == 0:
		switch {
		case strings.Contains(le.Message, "mapping values are not allowed"):
			e.Msg += " (a value holding ': ' must be quoted; or is this line indented too far?)"
		case strings.Contains(le.Message, "unknown anchor"):
			e.Msg += " (an alias *name needs an anchor &name written before it)"
		}
	case strings.Contains(ctx, "quoted scalar"):
		if strings.Contains(le.Message, "end of stream") {
			atContext("this quoted string is not closed before the end of the file")
		} else {
			e.Msg = fmt.Sprintf("%s (in the quoted string that starts at line %d, column %d)", le.Message, ctxLine, ctxCol)
		}
	case strings.Contains(ctx, "simple key"):
		atContext("this line is neither 'key: value' nor a list item: " + le.Message)
	default:
		e.Msg = fmt.Sprintf("%s (%s that starts at line %d, column %d: is this line indented like the ones before it?)", le.Message, ctx, ctxLine, ctxCol)
	}
	if e.Line == 0 {
		e.Col = 0
	}
	return e
}

// openFlow finds the innermost '[' or '{' still open at mark (Index holds
// the bracket), skipping comments and quoted strings; nil if none is.
func openFlow(data []byte, mark yaml.Mark) *yaml.Mark {
	if mark.Line == 0 { // unknown: the end of the file
		mark.Line = 1 << 30
	}
	var stack []yaml.Mark
	line, col := 1, 1
	prev := byte('\n') // the last non-blank byte, to tell a quote that opens a string
	for i := 0; i < len(data); i++ {
		if line > mark.Line || line == mark.Line && col >= mark.Column {
			break
		}
		c := data[i]
		switch {
		case c == '\n':
			line, col, prev = line+1, 1, '\n'
			continue
		case c == '#' && (i == 0 || data[i-1] == ' ' || data[i-1] == '\t' || data[i-1] == '\n'):
			for i+1 < len(data) && data[i+1] != '\n' {
				i++
			}
			continue
		case (c == '\'' || c == '"') && strings.IndexByte("\n[{,:-?", prev) >= 0:
			// Skip to the closing quote, counting the lines crossed.
			for i++; i < len(data); i++ {
				if data[i] < 0x80 || data[i] >= 0xC0 {
					col++
				}
				switch {
				case data[i] == '\n':
					line, col = line+1, 0
					continue
				case c == '"' && data[i] == '\\':
					i++
					col++
					continue
				case data[i] != c:
					continue
				case c == '\'' && i+1 < len(data) && data[i+1] == '\'':
					i++
					col++
					continue
				}
				break
			}
		case (c == '[' || c == '{') && strings.IndexByte("\n[{,:-?", prev) >= 0:
			// Only at the start of a value: a '[' inside a plain
			// scalar (a[1]) opens nothing.
			stack = append(stack, yaml.Mark{Index: int(c), Line: line, Column: col})
		case (c == ']' || c == '}') && len(stack) > 0:
			stack = stack[:len(stack)-1]
		}
		if c != ' ' && c != '\t' {
			prev = c
		}
		if c < 0x80 || c >= 0xC0 { // count characters, not UTF-8 continuation bytes
			col++
		}
	}
	if len(stack) == 0 {
		return nil
	}
	return &stack[len(stack)-1]
}

// legacyError reads a position from a message of the form "yaml: line 3: ...".
func legacyError(file string, err error) *Error {
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

// charAt returns the character at a 1-based line and column (0 if none).
func charAt(data []byte, line, col int) rune {
	if line < 1 || col < 1 {
		return 0
	}
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return 0
		}
		data = data[i+1:]
	}
	for c := 1; len(data) > 0; c++ {
		r, size := utf8.DecodeRune(data)
		if r == '\n' {
			return 0
		}
		if c == col {
			return r
		}
		data = data[size:]
	}
	return 0
}

// validator collects errors with positions.
type validator struct {
	file string
	doc  *yaml.Node // the document's root, for positions
	errs Errors
	// dropped counts errors past maxKeptErrors.
	dropped int
	seen    map[errKey]*Error
	repeats map[*Error]int
	// origins memoises origin: the same few paths, asked per target.
	origins map[string]string
	// shape is the field path the shape check is at.
	shape []pathElem
}

func (v *validator) add(e *Error) {
	// The same value reached through several aliases or merge keys gives
	// the same error at the same place: keep it once, count the repeats.
	k := errKey{e.Line, e.Col, e.Msg}
	if first, ok := v.seen[k]; ok && e.Line > 0 {
		v.repeats[first]++
		return
	}
	if len(v.errs) >= maxKeptErrors {
		v.dropped++
		return
	}
	if v.seen == nil {
		v.seen, v.repeats = map[errKey]*Error{}, map[*Error]int{}
	}
	v.seen[k] = e
	v.errs = append(v.errs, e)
}

type errKey struct {
	line, col int
	msg       string
}

func (v *validator) errorf(n *yaml.Node, field, format string, args ...any) {
	e := &Error{File: v.file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	v.add(e)
}

// at reports an error on the field at path, at the value written there or,
// when it was not written, at the closest enclosing key that was: an error
// never points at a line that does not hold what it is about.
func (v *validator) at(path, format string, args ...any) {
	p := path
	for {
		if n, _, _ := v.lookup(p); n != nil {
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

// set reports whether the file writes a value at path. An empty value
// (null) counts as not written: the default applies.
func (v *validator) set(path string) bool {
	n, _, _ := v.lookup(path)
	return n != nil && !isNull(n)
}

// written reports whether the mapping m (nil, or an alias of one, is fine)
// writes a value for key: set for a node already in hand, without a walk
// from the root.
func written(m *yaml.Node, key string) bool {
	m = resolve(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return false
	}
	_, val, _ := findKey(m, key)
	return val != nil && !isNull(resolve(val))
}

// line is the line the value at path is written on (0 if it is not).
func (v *validator) line(path string) int {
	if n, _, _ := v.lookup(path); n != nil {
		return n.Line
	}
	return 0
}

// result is the errors in file order (those without a position last),
// each reported once, at most maxShownErrors of them plus a count of the rest.
func (v *validator) result() Errors {
	es := v.errs
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if (a.Line == 0) != (b.Line == 0) {
			return b.Line == 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	out := es
	for e, n := range v.repeats { // counted by add
		e.Msg += fmt.Sprintf(" (and %d more times: the value is used again through an alias or merge key)", n)
	}
	more := v.dropped
	if len(out) > maxShownErrors {
		more += len(out) - maxShownErrors
		out = out[:maxShownErrors:maxShownErrors]
	}
	if more > 0 {
		out = append(out, &Error{File: v.file, Msg: fmt.Sprintf("and %d more errors (fix the ones above first)", more)})
	}
	return out
}

// quote quotes a value written in the file for a message, shortened when it
// is long: a 30 MB value must not be echoed whole into a terminal or log.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := s
	n := 0
	for i := range s {
		if n == maxQuoted {
			cut = s[:i]
			break
		}
		n++
	}
	if len(cut) == len(s) {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(cut), len(s))
}

// truncate bounds a message to max bytes, cutting at a character boundary.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s… (message cut: %d bytes)", s[:i], len(s))
}
