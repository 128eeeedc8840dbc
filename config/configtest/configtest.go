// Package configtest holds broken mesh files and what probed must say about
// each: the table shared by the config package's tests and the tests that
// feed the files to the probed binary (check-config, SIGHUP, POST /-/reload).
// Nothing outside tests imports it.
package configtest

import (
	"bytes"
	"fmt"
	"strings"
)

// Case is one broken mesh file.
type Case struct {
	Name string
	Data []byte
	// Line and Col locate the first error; both 0 when it has no position
	// (the error then names the file only).
	Line, Col int
	// Field is the first error's field path ("" for YAML syntax errors).
	Field string
	// Msg is a part of the first error's message.
	Msg string
}

// Prefix is how the first error line must begin for a file at path:
// "path:LINE:COL: field: ", "path:LINE:COL: " or "path: field: ".
func (c Case) Prefix(path string) string {
	var b strings.Builder
	b.WriteString(path)
	if c.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", c.Line, c.Col)
	}
	b.WriteString(": ")
	if c.Field != "" {
		b.WriteString(c.Field + ": ")
	}
	return b.String()
}

// head is lines 1-3 of a mesh whose line 4 is the case's target; mesh is a
// whole valid one (lines 1-4) for cases about other lines or sections.
const (
	head = "sites:\n  - name: a\n    targets:\n"
	mesh = head + "      - address: 10.0.0.1\n"
)

func text(name string, line, col int, field, msg, data string) Case {
	return Case{Name: name, Data: []byte(data), Line: line, Col: col, Field: field, Msg: msg}
}

// Broken returns the broken mesh files. Large ones are generated.
func Broken() []Case {
	cs := []Case{
		// --- YAML syntax: the position of the mistake, never a line early.
		text("tab indentation", 9, 1, "", "tab character", ""+
			"site: a\n"+
			"probe:\n"+
			"  interval: 1s\n"+
			"sites:\n"+
			"  - name: a\n"+
			"    targets:\n"+
			"      - address: 10.0.0.1\n"+
			"  - name: b\n"+
			"\ttargets: []\n"),
		text("unclosed flow list", 15, 20, "", "'[' list is not closed", ""+
			"site: a\n"+
			"probe:\n"+
			"  interval: 1s\n"+
			"  timeout: 2s\n"+
			"sites:\n"+
			"  - name: a\n"+
			"    targets:\n"+
			"      - address: 10.0.0.1\n"+
			"  - name: b\n"+
			"    targets:\n"+
			"      - address: 10.0.0.2\n"+
			"        path: sitelink\n"+
			"      - address: 10.0.0.3\n"+
			"        path: mpls\n"+
			"        tcp_ports: [22, 443\n"+
			"  - name: c\n"+
			"    targets:\n"+
			"      - address: 10.0.0.4\n"),
		text("unclosed flow list at end", 3, 14, "", "'[' list is not closed", "sites:\n  - name: a\n    targets: [\n"),
		text("unclosed flow mapping", 4, 9, "", "'{' mapping is not closed", head+"      - {address: 10.0.0.1\n  - name: b\n    targets: []\n"),
		text("unclosed quoted string", 4, 18, "", "quoted string is not closed", head+"      - address: \"10.0.0.1\n"),
		text("bad indentation", 5, 4, "", "did not find expected '-' indicator", mesh+"   interval: 1s\n"),
		text("colon in a plain value", 4, 31, "", "mapping values are not allowed", head+"      - address: 10.0.0.1 path: x\n"),
		text("line without colon", 5, 9, "", "neither 'key: value' nor a list item", mesh+"        sitelink\n      - address: 10.0.0.2\n"),
		text("reserved character", 4, 18, "", "cannot start with '@'", head+"      - address: @router\n"),
		text("undefined alias", 4, 18, "", "unknown anchor 'router'", head+"      - address: *router\n"),
		text("NUL byte", 4, 24, "", "U+0000", head+"      - address: 10.0.0\x00.1\n"),
		text("not UTF-8", 2, 14, "", "byte 0xE9 is not UTF-8", "sites:\n  - name: caf\xe9\n    targets: [{address: 10.0.0.1}]\n"),
		text("control character", 1, 8, "", "control character U+0007", "site: a\a\n"+mesh),
		text("second document", 5, 1, "", "a second YAML document begins here", mesh+"---\nsites: []\n"),
		text("second document malformed", 6, 8, "", "next one is malformed", mesh+"---\nsites: [\n"),
		text("trailing document marker", 5, 1, "", "a second YAML document begins here", mesh+"--- \n"),
		text("empty file", 0, 0, "", "empty mesh: the file has no content", ""),
		text("only comments", 0, 0, "", "empty mesh: the file has no content", "# site: a\n# sites: []\n"),
		text("CRLF line endings", 3, 14, "", "'[' list is not closed", "sites:\r\n  - name: a\r\n    targets: [\r\n"),

		// --- Aliases and merge keys.
		text("alias inside its anchor", 2, 27, "sites[0].targets", "used inside the value it names", "sites:\n  - &s {name: a, targets: *s}\n"),
		text("merge key with a scalar", 5, 13, "sites[0].targets[0].<<", "a merge key needs an alias of a mapping", mesh+"        <<: 5\n"),
		text("two merge keys", 7, 9, "sites[0].targets[1].<<", "a second merge key", ""+
			"sites:\n"+
			"  - name: a\n"+
			"    targets:\n"+
			"      - &t {address: 10.0.0.1}\n"+
			"      - address: 10.0.0.2\n"+
			"        <<: *t\n"+
			"        <<: *t\n"),
		text("unknown field through a merge key", 4, 18, "sites[0].targets[0].bogus", "unknown field \"bogus\"", ""+
			"sites:\n"+
			"  - name: a\n"+
			"    targets:\n"+
			"      - {<<: &d {bogus: 1}, address: 10.0.0.1}\n"),
		text("merge key under a key that takes a list", 4, 9, "sites[0].targets", "expected a list, got a mapping", "sites:\n  - name: a\n    targets:\n        <<: {address: 10.0.0.1}\n"),
		text("target repeated by an alias", 5, 9, "sites[0].targets[1]", "this alias repeats the target 10.0.0.1 written at line 4", head+"      - &t {address: 10.0.0.1}\n      - *t\n"),
		text("site repeated by an alias", 5, 5, "sites[1]", "this alias repeats site \"a\" (line 2)", "sites:\n  - &s\n    name: a\n    targets: [{address: 10.0.0.1}]\n  - *s\n"),

		// --- The document's shape: field paths and kinds.
		text("document is a list", 1, 1, "", "expected a mapping", "- site: a\n"),
		text("document is a scalar", 1, 1, "", "expected a mapping", "mesh.yaml\n"),
		text("unknown top-level key", 1, 1, "sties", "unknown field \"sties\" (did you mean \"sites\"?)", "sties:\n  - name: a\n"),
		text("unknown target key", 5, 9, "sites[0].targets[0].tcp_port", "did you mean \"tcp_ports\"?", mesh+"        tcp_port: [443]\n"),
		text("target name (removed)", 5, 9, "sites[0].targets[0].name", "targets have no name", mesh+"        name: edge-router\n"),
		text("site labels (removed)", 3, 5, "sites[0].labels", "sites have no labels", "sites:\n  - name: a\n    labels: {dc: x}\n    targets: [{address: 10.0.0.1}]\n"),
		text("key written twice", 5, 9, "sites[0].targets[0].address", "key written twice", mesh+"        address: 10.0.0.2\n"),
		text("complex key", 5, 11, "sites[0].targets[0]", "a key must be a plain name", mesh+"        ? [a, b]\n        : 1\n"),
		text("sites is a mapping", 2, 3, "sites", "expected a list, got a mapping", "sites:\n  a: {targets: []}\n"),
		text("targets is a scalar", 3, 14, "sites[0].targets", "expected a list, got \"10.0.0.1\"", "sites:\n  - name: a\n    targets: 10.0.0.1\n"),
		text("port is not a number", 5, 21, "sites[0].targets[0].tcp_ports[0]", "expected an integer from 0 to 65535, got \"http\"", mesh+"        tcp_ports: [http]\n"),
		text("port too large", 5, 25, "sites[0].targets[0].tcp_ports[1]", "got \"70000\"", mesh+"        tcp_ports: [22, 70000]\n"),
		text("bool written as yes", 5, 15, "sites[0].targets[0].icmp", "expected true or false, got \"yes\"", mesh+"        icmp: yes\n"),
		text("size not a number", 2, 9, "probe.size", "expected an integer, got \"big\"", "probe:\n  size: big\n"+mesh),
		text("tos too large", 2, 8, "probe.tos", "expected an integer from 0 to 255, got \"300\"", "probe:\n  tos: 300\n"+mesh),
		text("duration not a duration", 2, 13, "probe.interval", "invalid duration \"often\"", "probe:\n  interval: often\n"+mesh),
		text("duration without unit", 2, 13, "probe.interval", "a number needs a unit", "probe:\n  interval: 5\n"+mesh),
		text("duration unknown unit", 2, 13, "probe.interval", "unknown unit \"y\"", "probe:\n  interval: 1y\n"+mesh),
		text("duration d overflows", 2, 13, "probe.interval", "duration \"213504d\" is out of range", "probe:\n  interval: 213504d\n"+mesh),
		text("duration w overflows", 2, 12, "probe.timeout", "duration \"30500w\" is out of range", "probe:\n  timeout: 30500w\n"+mesh),
		text("duration is a list", 2, 13, "probe.interval", "expected a duration", "probe:\n  interval: [1s]\n"+mesh),

		// --- Explicit zeros are values, checked against the ranges.
		text("interval 0s", 2, 13, "probe.interval", "interval 0s is below the minimum of 10ms", "probe:\n  interval: 0s\n"+mesh),
		text("timeout 0s", 2, 12, "probe.timeout", "timeout must be positive, got 0s", "probe:\n  timeout: 0s\n"+mesh),
		text("size 0", 2, 9, "probe.size", "between 16 and 9000 bytes, got 0", "probe:\n  size: 0\n"+mesh),
		text("loss_window 0", 2, 16, "probe.loss_window", "between 1 and 100000 probes, got 0", "probe:\n  loss_window: 0\n"+mesh),
		text("down_after 0", 2, 15, "probe.down_after", "at least 1, got 0", "probe:\n  down_after: 0\n"+mesh),
		text("flows 0", 2, 10, "probe.flows", "between 1 and 128 flows, got 0", "probe:\n  flows: 0\n"+mesh),
		text("resolve_interval 0s", 2, 21, "probe.resolve_interval", "at least 1s, got 0s", "probe:\n  resolve_interval: 0s\n"+mesh),
		text("target interval 0s", 5, 19, "sites[0].targets[0].interval", "interval 0s is below the minimum", mesh+"        interval: 0s\n"),
		text("target size 0", 5, 15, "sites[0].targets[0].size", "got 0", mesh+"        size: 0\n"),
		text("target path empty", 5, 15, "sites[0].targets[0].path", "path is empty", mesh+"        path: \"\"\n"),
		text("stamp burst 0", 3, 12, "stamp.reflector.burst", "at least 1 packet, got 0", "stamp:\n  reflector:\n    burst: 0\n"+mesh),
		text("trace max_ttl 0", 2, 12, "trace.max_ttl", "between 1 and 64 hops, got 0", "trace:\n  max_ttl: 0\n"+mesh),
		text("udp trace port 0", 3, 9, "trace.port", "between 1 and 65535, got 0", "trace:\n  method: udp\n  port: 0\n"+mesh),

		// --- Timing: the error is on a value the user wrote.
		text("target timeout over 10x", 6, 18, "sites[0].targets[0].timeout", "timeout 2s is more than 10 times the interval 100ms", mesh+"        interval: 100ms\n        timeout: 2s\n"),
		text("target interval against probe timeout", 7, 19, "sites[0].targets[0].interval", "too short for the timeout 2s (set at probe.timeout, line 2)", "probe:\n  timeout: 2s\n"+mesh+"        interval: 100ms\n"),
		text("probe timeout against default interval", 2, 12, "probe.timeout", "more than 10 times the interval 1s (the default)", "probe:\n  timeout: 20s\n"+mesh),
		text("target timeout against probe interval", 7, 18, "sites[0].targets[0].timeout", "interval 100ms (set at probe.interval, line 2)", "probe:\n  interval: 100ms\n"+mesh+"        timeout: 5s\n"),

		// --- Values.
		text("invalid address", 4, 18, "sites[0].targets[0].address", "invalid address \"10.0.0.300\"", "sites:\n  - name: a\n    targets:\n      - address: 10.0.0.300\n"),
		text("duplicate target", 7, 18, "sites[1].targets[0].address", "duplicate target 10.0.0.1 (path default, segment default); first defined at line 4", mesh+"  - name: b\n    targets:\n      - address: 10.0.0.1\n"),
		text("duplicate site", 5, 11, "sites[1].name", "duplicate site \"a\" (first defined at line 2)", mesh+"  - name: a\n    targets: [{address: 10.0.0.2}]\n"),
		text("unknown own site", 1, 7, "site", "unknown site \"nowhere\": the sites list has a", "site: nowhere\n"+mesh),
		text("no sites key", 0, 0, "sites", "empty mesh: no sites are defined", "probe:\n  interval: 1s\n"),
		text("sites empty list", 1, 8, "sites", "empty mesh: no sites are defined", "sites: []\n"),
		text("family mismatch", 5, 17, "sites[0].targets[0].family", "family ip6 does not match address 10.0.0.1", mesh+"        family: ip6\n"),
		text("expect unknown", 5, 17, "sites[0].targets[0].expect", "expect must be reachable or unreachable, got \"maybe\"", mesh+"        expect: maybe\n"),
		text("nothing to probe", 5, 15, "sites[0].targets[0].icmp", "nothing would be probed", mesh+"        icmp: false\n"),
		text("stamp port out of range", 2, 9, "stamp.port", "port must be between 1 and 65535, got 70000", "stamp:\n  port: 70000\n  reflector: {enabled: true}\n"+mesh),
		text("stamp rate_limit 0", 3, 17, "stamp.reflector.rate_limit", "must be positive", "stamp:\n  reflector:\n    rate_limit: 0\n"+mesh),
		text("stamp listen hostname", 3, 14, "stamp.reflector.listen[0]", "the host must be an IP address", "stamp:\n  reflector:\n    listen: [agent.example.net]\n"+mesh),
		text("trace port with icmp", 2, 9, "trace.port", "only used by the udp and tcp methods", "trace:\n  port: 33434\n"+mesh),
		text("target flows over the maximum", 5, 16, "sites[0].targets[0].flows", "between 1 and 128 flows, got 200", mesh+"        flows: 200\n"),
		text("tcp flows longer than their turn", 6, 16, "sites[0].targets[0].flows", "the timeout 2s (the default) must be shorter than flows × interval = 2s", mesh+"        tcp_ports: [443]\n        flows: 2\n"),
		text("tcp flows against probe flows", 6, 40, "sites[0].targets[0].tcp_ports", "timeout 1s (this target's) must be shorter than flows × interval = 400ms",
			"probe:\n  flows: 4\n"+head+"      - {address: 10.0.0.1, tcp_ports: [443], interval: 100ms, timeout: 1s}\n"),
		text("mtu retries", 2, 12, "mtu.retries", "between 0 and 10, got 11", "mtu:\n  retries: 11\n"+mesh),
		text("aws interval too short", 3, 13, "aws.interval", "must be at least 10s, got 5s", "aws:\n  regions: [us-east-1]\n  interval: 5s\n"+mesh),
		text("aws metrics_stale_after never works", 3, 24, "aws.metrics_stale_after", "CloudWatch stamps a datapoint with the start of its minute", "aws:\n  regions: [us-east-1]\n  metrics_stale_after: 10s\n"+mesh),
		text("aws timeout over interval", 4, 12, "aws.timeout", "timeout 1m0s is longer than interval 30s", "aws:\n  regions: [us-east-1]\n  interval: 30s\n  timeout: 1m\n"+mesh),
		text("aws region name", 2, 13, "aws.regions[0]", "\"us-east\" is not an AWS region name", "aws:\n  regions: [us-east]\n"+mesh),
		text("aws without region", 2, 3, "aws", "no AWS region to poll", "aws:\n  poll_all: true\n"+mesh),
		text("sla loss over 100", 3, 11, "sla.defaults.loss", "loss is a percentage from 0 to 100, got 150", "sla:\n  defaults:\n    loss: 150\n"+mesh),
		text("sla pair of one site", 2, 36, "sla.objectives[0].target", "a pair needs two sites", "sla:\n  objectives: [{source: a, target: a}]\n"+mesh),
	}
	cs = append(cs, generated()...)
	return cs
}

// generated are the cases too large to write out.
func generated() []Case {
	var cs []Case

	// A 30 MB value: refused by size before it is read; nothing echoes it.
	big := bytes.Repeat([]byte("x"), 30<<20)
	cs = append(cs, Case{Name: "30 MB value", Data: append(append([]byte(mesh+"        path: "), big...), '\n'),
		Msg: "more than the 16 MiB a mesh file may be"})

	// A 2 MB value within the size limit: quoted shortened.
	v := strings.Repeat("y/", 1<<20)
	cs = append(cs, Case{Name: "2 MB value", Data: []byte(mesh + "        segment: " + v + "\n"),
		Line: 5, Col: 18, Field: "sites[0].targets[0].segment", Msg: "segment \"y/y/y/"})

	// The 10 KB file: 300 sites x 300 targets through two aliases
	// (90,000 duplicate targets before the expansion limit).
	cs = append(cs, Case{Name: "alias bomb 10 KB", Data: TwoLevelBomb(300, 300),
		Line: 5, Col: 5, Field: "sites[1]", Msg: "aliases expand the file to"})

	// About 58 KB: sites x targets x ports, billions of values expanded.
	cs = append(cs, Case{Name: "alias bomb 58 KB", Data: ThreeLevelBomb(2000, 2000, 4500),
		Line: 2007, Col: 5, Field: "sites[1]", Msg: "aliases expand the file to"})

	// A list of 1,500 targets shared by a second site through an alias:
	// within the expansion limit, so each repeat is reported (once the
	// YAML library refused this with "excessive aliasing" and no line).
	var l strings.Builder
	l.WriteString("sites:\n  - name: a\n    targets: &tl\n")
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&l, "      - {address: 10.1.%d.%d}\n", i/250, i%250+1)
	}
	l.WriteString("  - name: b\n    targets: *tl\n")
	cs = append(cs, Case{Name: "target list shared by an alias", Data: []byte(l.String()),
		Line: 1505, Col: 14, Field: "sites[1].targets[0]", Msg: "this alias repeats the target 10.1.0.1 written at line 4"})

	// The costliest broken alias file under the expansion limit: one
	// target of 9 values repeated by 58 KB of aliases (see AliasFiles).
	fat := AliasFiles()["fat target repeated"]
	prefix := "    targets: [&t {address: 10.0.0.1, path: p, segment: s, size: 100}"
	cs = append(cs, Case{Name: "58 KB of aliases to one target", Data: fat,
		Line: 3, Col: len(prefix) + 2, Field: "sites[0].targets[1]", Msg: "this alias repeats the target 10.0.0.1 written at line 3"})

	// Many distinct mistakes: the first is shown, the count of the rest ends the list.
	var b strings.Builder
	b.WriteString("sites:\n  - name: a\n    targets:\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "      - address: 10.0.%d.%d\n        size: 1\n", i/250, i%250+1)
	}
	cs = append(cs, Case{Name: "500 errors", Data: []byte(b.String()),
		Line: 5, Col: 15, Field: "sites[0].targets[0].size", Msg: "got 1"})
	return cs
}

// TwoLevelBomb is a mesh whose one site, with m copies of one target by
// alias, is repeated k times by alias.
func TwoLevelBomb(k, m int) []byte {
	var b strings.Builder
	b.WriteString("sites:\n  - &s\n    name: a\n    targets: [&t {address: 10.0.0.1}")
	b.WriteString(strings.Repeat(", *t", m-1))
	b.WriteString("]\n")
	b.WriteString(strings.Repeat("  - *s\n", k-1))
	return []byte(b.String())
}

// ThreeLevelBomb repeats a site k times, its target m times and the
// target's p ports list by aliases: k*m*p values from a few dozen KB.
func ThreeLevelBomb(k, m, p int) []byte {
	var b strings.Builder
	b.WriteString("sites:\n  - &s\n    name: a\n    targets:\n      - &t\n        address: 10.0.0.1\n        tcp_ports: &p [1")
	for i := 2; i <= p; i++ {
		fmt.Fprintf(&b, ",%d", i)
	}
	b.WriteString("]\n")
	b.WriteString(strings.Repeat("      - *t\n", m-1))
	b.WriteString(strings.Repeat("  - *s\n", k-1))
	return []byte(b.String())
}

// AliasSize is the size of the files AliasFiles builds: that of the issue's
// alias bomb.
const AliasSize = 58 << 10

// AliasFiles are files of about AliasSize built to cost the most while
// staying under the expansion limit (10 times the values written, or
// 20,000 more): the worst a small file can do once bombs are refused.
func AliasFiles() map[string][]byte {
	out := map[string][]byte{}
	fill := func(head, item, tail string) []byte {
		n := (AliasSize - len(head) - len(tail)) / len(item)
		return []byte(head + strings.Repeat(item, n) + tail)
	}
	// A target of 9 values (under the factor of 10) repeated by aliases.
	out["fat target repeated"] = fill("sites:\n  - name: a\n    targets: [&t {address: 10.0.0.1, path: p, segment: s, size: 100}", ",*t", "]\n")
	// A small target repeated by aliases.
	out["target repeated"] = fill("sites:\n  - name: a\n    targets: [&t {address: 10.0.0.1}", ",*t", "]\n")
	// A resource repeated by aliases in the aws: section.
	out["aws resource repeated"] = fill("sites: [{name: a, region: us-east-1, targets: [{address: 10.0.0.1}]}]\naws:\n  resources: [&r {id: dxcon-1, site: a}", ",*r", "]\n")
	// Distinct targets sharing a port list: a valid mesh, all probes.
	var b strings.Builder
	b.WriteString("site: a\nsites:\n  - name: a\n    targets: [{address: 10.0.0.1}]\n  - name: b\n    targets:\n      - {address: 10.1.0.1, tcp_ports: &p [1")
	for i := 2; i <= 30; i++ {
		fmt.Fprintf(&b, ",%d", i)
	}
	b.WriteString("]}\n")
	for i := 1; b.Len() < AliasSize-40; i++ {
		fmt.Fprintf(&b, "      - {address: 10.1.%d.%d, tcp_ports: *p}\n", i/250, i%250+1)
	}
	out["targets sharing ports (valid)"] = []byte(b.String())
	// Distinct targets merging a defaults mapping of every field: valid.
	b.Reset()
	b.WriteString("site: a\nsites:\n  - name: a\n    targets: [{address: 10.0.0.1}]\n  - name: b\n    targets:\n")
	b.WriteString("      - &d {address: 10.2.0.1, path: p, segment: s, interval: 1s, timeout: 1s, size: 100, tos: 0, family: ip4, expect: reachable, trace: false, mtu: false, icmp: true}\n")
	for i := 1; b.Len() < AliasSize-40; i++ {
		fmt.Fprintf(&b, "      - {<<: *d, address: 10.2.%d.%d}\n", i/250, i%250+1)
	}
	out["targets merging defaults (valid)"] = []byte(b.String())
	return out
}
