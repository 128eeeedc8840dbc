// Package deploy holds what runs probed in production: Prometheus recording
// and alerting rules (prometheus/), the Alertmanager routing (alertmanager/),
// Grafana dashboards (grafana/), systemd and Kubernetes manifests, and the
// Dockerfile at the repository root. This Go package only carries the tests
// that prove those files against the real promtool, amtool, Prometheus and
// Alertmanager; it has no code of its own.
package deploy
