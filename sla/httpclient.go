package sla

import (
	"fmt"
	"net/http"

	promconfig "github.com/prometheus/common/config"
)

// NewHTTPClient builds the client used to reach Prometheus from a file in
// Prometheus' own HTTP client format (basic_auth, authorization, oauth2,
// tls_config, proxy_url, …), the same block a scrape job or remote_read
// takes. An empty file name gives the default client.
func NewHTTPClient(file string) (*http.Client, error) {
	cfg := promconfig.DefaultHTTPClientConfig
	if file != "" {
		c, _, err := promconfig.LoadHTTPConfigFile(file)
		if err != nil {
			return nil, fmt.Errorf("loading Prometheus HTTP client settings from %s: %w", file, err)
		}
		cfg = *c
	}
	hc, err := promconfig.NewClientFromConfig(cfg, "probed-sla")
	if err != nil {
		return nil, fmt.Errorf("setting up the HTTP client from %s: %w", file, err)
	}
	return hc, nil
}
