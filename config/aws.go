package config

// AWSConfig configures AWS polling (Direct Connect, CloudWatch, Network
// Synthetic Monitor). Absent section: the agent never touches AWS.
// Owned by the AWS feature.
type AWSConfig struct {
	Regions []string `yaml:"regions"`
}

func (a *AWSConfig) validate(v *validator, path string, c *Config) {}
