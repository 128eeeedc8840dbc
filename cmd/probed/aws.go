package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
)

// newAWSFeature starts AWS polling (the AWS-state feature replaces this stub).
func newAWSFeature(ctx context.Context, d *deps) feature { return nil }

// discoverTargets lists the targets AWS SiteLink discovery would add, for
// check-config. The AWS-state feature replaces this stub.
func discoverTargets(ctx context.Context, cfg *config.Config, site string, logger *zap.Logger) ([]config.ProbeSpec, error) {
	return nil, nil
}
