package stamp

import (
	"fmt"
	"net/netip"
	"strings"
)

// AllowList is the set of sources a reflector answers: single addresses
// (the mesh's agents and targets) and prefixes (configured). It is
// immutable; a reload builds a new one.
type AllowList struct {
	addrs    map[netip.Addr]struct{}
	prefixes []netip.Prefix
}

// NewAllowList parses addresses ("10.79.2.1") and prefixes ("10.79.0.0/16").
func NewAllowList(entries []string) (*AllowList, error) {
	a := &AllowList{addrs: make(map[netip.Addr]struct{}, len(entries))}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("allow-list entry %q: %w", e, err)
			}
			a.prefixes = append(a.prefixes, p.Masked())
			continue
		}
		ad, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("allow-list entry %q: %w", e, err)
		}
		a.addrs[ad.Unmap()] = struct{}{}
	}
	return a, nil
}

// Contains reports whether a source may be answered.
func (a *AllowList) Contains(ip netip.Addr) bool {
	if a == nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	if _, ok := a.addrs[ip]; ok {
		return true
	}
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Len is the number of entries.
func (a *AllowList) Len() int {
	if a == nil {
		return 0
	}
	return len(a.addrs) + len(a.prefixes)
}
