package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/internal/netlab"
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

func TestSetFlagsMembers(t *testing.T) {
	pp, err := (setFlags{members: 4, membersSet: true}).patch()
	if err != nil || *pp.Members != 4 || pp.Member != nil {
		t.Fatalf("--members 4: %+v %v", pp, err)
	}
	pp, err = (setFlags{member: 2, memberSet: true, loss: "30%", hops: "10.90.17.1,10.90.17.32", hopsSet: true}).patch()
	if err != nil || *pp.Member != 2 || *pp.Loss != 0.3 || len(*pp.Hops) != 2 {
		t.Fatalf("--member 2 --loss 30%% --hops: %+v %v", pp, err)
	}
	for _, bad := range []setFlags{
		{members: -1, membersSet: true},
		{members: 65, membersSet: true},
		{member: -1, memberSet: true},
		{member: 1, memberSet: true, mtu: 1400, mtuSet: true},
		{member: 1, memberSet: true, dscp: "46"},
	} {
		if _, err := bad.patch(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestShowTableMembers(t *testing.T) {
	var b strings.Builder
	links := []netlab.LinkState{{From: "us-east", To: "eu-frankfurt", Path: "sitelink", Delay: netlab.Duration(40 * time.Millisecond),
		Stats: netlab.LinkStats{Packets: 100, Delivered: 90, Lost: 10},
		Members: []netlab.MemberState{
			{Stats: netlab.MemberStats{Packets: 60, Delivered: 60}},
			{Delay: netlab.Duration(7 * time.Millisecond), Loss: 0.25, Hops: []netip.Addr{netip.MustParseAddr("10.90.17.11")},
				Stats: netlab.MemberStats{Packets: 40, Delivered: 30, Lost: 10}},
		}}}
	if err := showTable(&b, links); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"member 0", "member 1", "+7ms", "25%", "10.90.17.11", "path's"} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q", want)
		}
	}
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("%d lines, want header, path and two members", n)
	}
}
