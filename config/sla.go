package config

// SLAConfig holds the objectives SLA reports are measured against.
// Owned by the SLA feature.
type SLAConfig struct{}

func (s *SLAConfig) validate(v *validator, path string) {}
