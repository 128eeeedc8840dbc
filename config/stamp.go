package config

// STAMPConfig configures the STAMP session-reflector and session-sender
// (RFC 8762/8972). Owned by the STAMP feature.
type STAMPConfig struct {
	// Port is the UDP port reflectors listen on and senders send to (default 862).
	Port int `yaml:"port"`
}

const DefaultSTAMPPort = 862

func (s *STAMPConfig) validate(v *validator, path string) {
	if s.Port == 0 {
		s.Port = DefaultSTAMPPort
	}
	if s.Port < 1 || s.Port > 65535 {
		v.at(path+".port", "port must be between 1 and 65535, got %d", s.Port)
	}
}

func (s *STAMPConfig) port() uint16 {
	if s.Port == 0 {
		return DefaultSTAMPPort
	}
	return uint16(s.Port)
}
