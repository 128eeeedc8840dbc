package config

import (
	"errors"
	"fmt"
	"time"

	"go.yaml.in/yaml/v4"
)

// Duration is a time.Duration written as a Go/Prometheus duration string.
type Duration time.Duration

// UnmarshalYAML accepts "1s", "250ms", "1m30s" and Prometheus units ("1d").
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 1s or 500ms")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in its string form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// durationUnits are Go's units plus the d (24h) and w (7d) that Prometheus
// users write. There is no y: a year has no fixed length.
var durationUnits = map[string]uint64{
	"ns": uint64(time.Nanosecond),
	"us": uint64(time.Microsecond),
	"µs": uint64(time.Microsecond), // U+00B5 micro sign
	"μs": uint64(time.Microsecond), // U+03BC Greek mu
	"ms": uint64(time.Millisecond),
	"s":  uint64(time.Second),
	"m":  uint64(time.Minute),
	"h":  uint64(time.Hour),
	"d":  uint64(24 * time.Hour),
	"w":  uint64(7 * 24 * time.Hour),
}

var errDurationRange = errors.New("out of range")

// ParseDuration parses Go durations ("1m30s", "1.5h", "250ms") plus the "d"
// and "w" units ("1d", "2w3d12h"). A value beyond time.Duration's range
// (about 292 years) is an error: it must never wrap around into a short or
// negative duration, as a plain multiplication would.
func ParseDuration(s string) (time.Duration, error) {
	invalid := func() (time.Duration, error) {
		return 0, fmt.Errorf("invalid duration %s (use e.g. 1s, 500ms, 5m, 1d)", quote(s))
	}
	rest := s
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "0" {
		return 0, nil
	}
	if rest == "" {
		return invalid()
	}
	// The loop follows time.ParseDuration, with overflow reported rather
	// than folded into "invalid".
	var total uint64
	for rest != "" {
		if c := rest[0]; c != '.' && (c < '0' || c > '9') {
			return invalid()
		}
		n := len(rest)
		v, r, err := leadingInt(rest)
		if err != nil {
			return 0, outOfRange(s)
		}
		rest = r
		pre := n != len(rest)
		var frac uint64
		scale := 1.0
		post := false
		if rest != "" && rest[0] == '.' {
			rest = rest[1:]
			n := len(rest)
			frac, scale, rest = leadingFraction(rest)
			post = n != len(rest)
		}
		if !pre && !post {
			return invalid()
		}
		i := 0
		for i < len(rest) && rest[i] != '.' && (rest[i] < '0' || rest[i] > '9') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %s: a number needs a unit (ms, s, m, h, d, w)", quote(s))
		}
		unit, ok := durationUnits[rest[:i]]
		if !ok {
			return 0, fmt.Errorf("invalid duration %s: unknown unit %s (use ns, us, ms, s, m, h, d or w)", quote(s), quote(rest[:i]))
		}
		rest = rest[i:]
		if v > (1<<63)/unit {
			return 0, outOfRange(s)
		}
		v *= unit
		if frac > 0 {
			v += uint64(float64(frac) * (float64(unit) / scale))
			if v > 1<<63 {
				return 0, outOfRange(s)
			}
		}
		total += v
		if total > 1<<63 {
			return 0, outOfRange(s)
		}
	}
	if neg {
		return -time.Duration(total), nil
	}
	if total > 1<<63-1 {
		return 0, outOfRange(s)
	}
	return time.Duration(total), nil
}

func outOfRange(s string) error {
	return fmt.Errorf("duration %s is out of range: the longest possible is about 292 years (106751d)", quote(s))
}

// leadingInt consumes the leading [0-9]* of s.
func leadingInt(s string) (x uint64, rest string, err error) {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			break
		}
		if x > 1<<63/10 {
			return 0, rest, errDurationRange
		}
		x = x*10 + uint64(c) - '0'
		if x > 1<<63 {
			return 0, rest, errDurationRange
		}
	}
	return x, s[i:], nil
}

// leadingFraction consumes the leading [0-9]* of s; digits beyond what a
// uint64 holds are dropped (they are below a nanosecond anyway).
func leadingFraction(s string) (x uint64, scale float64, rest string) {
	i := 0
	scale = 1
	overflow := false
	for ; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			break
		}
		if overflow {
			continue
		}
		if x > (1<<63-1)/10 {
			overflow = true
			continue
		}
		y := x*10 + uint64(c) - '0'
		if y > 1<<63 {
			overflow = true
			continue
		}
		x = y
		scale *= 10
	}
	return x, scale, s[i:]
}
