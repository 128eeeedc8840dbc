package main

import "context"

// newSTAMPFeature starts the STAMP reflector and sender (the STAMP feature replaces this stub).
func newSTAMPFeature(ctx context.Context, d *deps) feature { return nil }
