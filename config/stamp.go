package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// STAMPConfig configures the STAMP session-reflector and session-sender
// (RFC 8762/8972). Owned by the STAMP feature; see docs/stamp.md.
type STAMPConfig struct {
	// Port is the UDP port senders send to and reflectors listen on (default 862).
	Port int `yaml:"port"`
	// AuthKeyFile holds the HMAC-SHA-256 key (hex, at least 16 octets) of
	// authenticated mode. When set, every sender and the reflector use
	// authenticated mode; unset means unauthenticated mode.
	AuthKeyFile string `yaml:"auth_key_file"`
	// ProbeAgents adds a STAMP session to every other site's agent address,
	// besides the targets marked stamp: true.
	ProbeAgents bool `yaml:"probe_agents"`
	// Reflector is the session-reflector of this agent.
	Reflector STAMPReflectorConfig `yaml:"reflector"`

	key []byte
}

// STAMPReflectorConfig configures the session-reflector.
type STAMPReflectorConfig struct {
	Enabled bool `yaml:"enabled"`
	// Listen lists host:port addresses to answer on; a bare host takes
	// stamp.port. Default: 0.0.0.0 and [::] on stamp.port.
	Listen []string `yaml:"listen"`
	// AllowedSources adds addresses or prefixes (CIDR) to the sources the
	// reflector answers; every address the mesh file lists (agents and
	// targets of all sites) is always allowed.
	AllowedSources []string `yaml:"allowed_sources"`
	// RateLimit is the packets per second answered per source address, with
	// bursts of Burst packets; more is dropped unanswered.
	RateLimit float64 `yaml:"rate_limit"`
	Burst     int     `yaml:"burst"`
	// SessionTimeout forgets the state of a session idle that long.
	SessionTimeout Duration `yaml:"session_timeout"`
}

// STAMP defaults.
const (
	DefaultSTAMPPort           = 862
	DefaultSTAMPRateLimit      = 100
	DefaultSTAMPBurst          = 200
	DefaultSTAMPSessionTimeout = 5 * time.Minute
)

func (s *STAMPConfig) validate(v *validator, path string) {
	if s.Port == 0 {
		s.Port = DefaultSTAMPPort
	}
	if s.Port < 1 || s.Port > 65535 {
		v.at(path+".port", "port must be between 1 and 65535, got %d", s.Port)
	}
	if s.AuthKeyFile != "" {
		key, err := readSTAMPKey(s.AuthKeyFile)
		if err != nil {
			v.at(path+".auth_key_file", "%v", err)
		}
		s.key = key
	}
	r := &s.Reflector
	rp := path + ".reflector"
	if r.RateLimit == 0 {
		r.RateLimit = DefaultSTAMPRateLimit
	}
	if r.Burst == 0 {
		r.Burst = DefaultSTAMPBurst
	}
	if r.SessionTimeout == 0 {
		r.SessionTimeout = Duration(DefaultSTAMPSessionTimeout)
	}
	if r.RateLimit < 0 {
		v.at(rp+".rate_limit", "must be positive (packets per second per source), got %g", r.RateLimit)
	}
	if r.Burst < 1 {
		v.at(rp+".burst", "must be at least 1 packet, got %d", r.Burst)
	}
	if r.SessionTimeout.D() < time.Second {
		v.at(rp+".session_timeout", "must be at least 1s, got %s", r.SessionTimeout.D())
	}
	if len(r.Listen) == 0 {
		r.Listen = []string{"0.0.0.0", "::"}
	}
	for i := range r.Listen {
		a, err := normalizeListen(r.Listen[i], s.Port)
		if err != nil {
			v.at(fmt.Sprintf("%s.listen[%d]", rp, i), "%v", err)
			continue
		}
		r.Listen[i] = a
	}
	for i, e := range r.AllowedSources {
		if strings.Contains(e, "/") {
			if _, err := netip.ParsePrefix(e); err != nil {
				v.at(fmt.Sprintf("%s.allowed_sources[%d]", rp, i), "not an address prefix such as 10.79.0.0/16: %q", e)
			}
		} else if _, err := netip.ParseAddr(e); err != nil {
			v.at(fmt.Sprintf("%s.allowed_sources[%d]", rp, i), "not an IP address or prefix: %q", e)
		}
	}
}

// normalizeListen turns "10.0.0.1", "::", ":1862" or "[::1]:862" into host:port.
func normalizeListen(a string, port int) (string, error) {
	host, p, err := net.SplitHostPort(a)
	if err != nil {
		// No port: the whole string is the host (an IPv6 literal has colons).
		host, p = strings.Trim(a, "[]"), strconv.Itoa(port)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", fmt.Errorf("listen address %q: the host must be an IP address", a)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("listen address %q: invalid port %q", a, p)
	}
	return net.JoinHostPort(host, p), nil
}

// readSTAMPKey reads a hex-encoded key (blank lines and # comments ignored).
// The file must not be readable by others: the key lets anyone make the
// reflector answer.
func readSTAMPKey(file string) ([]byte, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key: %v", err)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("key file %s is readable by others (mode %v): chmod 600 it", file, st.Mode().Perm())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key: %v", err)
	}
	var hexed strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		hexed.WriteString(strings.Join(strings.Fields(line), ""))
	}
	key, err := hex.DecodeString(hexed.String())
	if err != nil {
		return nil, fmt.Errorf("key file %s must hold the key in hex: %v", file, err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("key in %s is %d octets; HMAC-SHA-256 needs at least 16 (32 hex digits)", file, len(key))
	}
	return key, nil
}

// Key is the authenticated-mode key read from AuthKeyFile (nil when unset).
func (s *STAMPConfig) Key() []byte { return s.key }

func (s *STAMPConfig) port() uint16 {
	if s.Port == 0 {
		return DefaultSTAMPPort
	}
	return uint16(s.Port)
}

// STAMPAllowedSources is what the reflector answers: every IP literal the
// mesh lists (agents and targets of every site) and the configured
// allowed_sources. Hostnames are left out: list their addresses in
// allowed_sources.
func (c *Config) STAMPAllowedSources() []string {
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if ad, err := netip.ParseAddr(a); err == nil {
			a = ad.Unmap().String()
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	for _, s := range c.Sites {
		add(s.Agent)
		for _, t := range s.Targets {
			add(t.Address)
			add(t.Source)
		}
	}
	for _, e := range c.STAMP.Reflector.AllowedSources {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}
