package main

import (
	"testing"
	"time"
)

func TestSetFlagsPatch(t *testing.T) {
	f := setFlags{from: "us-east", to: "eu-frankfurt", path: "sitelink", delay: "40ms", loss: "1%", hops: "10.90.17.1, fd90:1:7::1", hopsSet: true, dscp: "46", downSet: true}
	pp, err := f.patch()
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(*pp.Delay) != 40*time.Millisecond || *pp.Loss != 0.01 || len(*pp.Hops) != 2 || *pp.DSCP != 46 || *pp.Down || pp.Jitter != nil || pp.MTU != nil {
		t.Errorf("patch %+v", pp)
	}
	if pp, _ := (setFlags{loss: "0.1", dscp: "none"}).patch(); *pp.Loss != 0.1 || *pp.DSCP != -1 {
		t.Errorf("loss 0.1 / dscp none: %+v", pp)
	}
	for _, bad := range []setFlags{{loss: "150%"}, {delay: "fast"}, {dscp: "64"}, {hops: "x", hopsSet: true}} {
		if _, err := bad.patch(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
