package main

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
)

// deps is what the daemon hands to its optional features (AWS polling,
// STAMP, path discovery): they register their own collectors and handlers.
type deps struct {
	Logger   *zap.Logger
	Registry prometheus.Registerer
	Mux      *http.ServeMux
	Site     string
}

// feature is an optional part of the agent. Apply is called with the first
// config and again after every successful reload; an error on reload is
// reported and the feature keeps its previous settings.
type feature interface {
	Apply(ctx context.Context, cfg *config.Config, plan *config.Plan) error
}

// discoverer is a feature that adds probe targets of its own (AWS SiteLink
// discovery). The daemon merges them into the plan.
type discoverer interface {
	Discovered() []config.ProbeSpec
}

// changeNotifier is a discoverer that says when its targets changed, so the
// daemon re-plans without waiting for a reload.
type changeNotifier interface {
	SetOnChange(func())
}

// newFeatures builds every optional feature; constructors return nil for a
// feature that is not compiled in or not wanted.
func newFeatures(ctx context.Context, d *deps) []feature {
	var fs []feature
	for _, f := range []feature{newAWSFeature(ctx, d), newSTAMPFeature(ctx, d), newPathFeature(ctx, d)} {
		if f != nil {
			fs = append(fs, f)
		}
	}
	return fs
}
