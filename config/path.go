package config

import "time"

// TraceConfig is the mesh-wide path discovery setting (path-metrics feature).
type TraceConfig struct {
	// Enabled turns discovery on for every target; a target's trace: overrides it.
	Enabled  bool     `yaml:"enabled"`
	Interval Duration `yaml:"interval"`
}

// MTUConfig is the mesh-wide path MTU probing setting.
type MTUConfig struct {
	Interval Duration `yaml:"interval"`
	// Paths lists the path labels probed by default (default: [sitelink]).
	Paths []string `yaml:"paths"`
}

func (t *TraceConfig) validate(v *validator, path string) {
	if t.Interval == 0 {
		t.Interval = Duration(60 * time.Second)
	}
	if t.Interval.D() < time.Second {
		v.at(path+".interval", "must be at least 1s, got %s", t.Interval.D())
	}
}

func (m *MTUConfig) validate(v *validator, path string) {
	if m.Interval == 0 {
		m.Interval = Duration(10 * time.Minute)
	}
	if m.Paths == nil {
		m.Paths = []string{"sitelink"}
	}
	if m.Interval.D() < time.Second {
		v.at(path+".interval", "must be at least 1s, got %s", m.Interval.D())
	}
}

// defaultFor reports whether targets on the given path get MTU probing by default.
func (m *MTUConfig) defaultFor(pathLabel string) bool {
	for _, p := range m.Paths {
		if p == pathLabel {
			return true
		}
	}
	return false
}
