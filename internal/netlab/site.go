package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
)

// Site is one site of a running lab: its namespace and addresses.
type Site struct {
	lab *Lab
	rt  *siteRT
}

// Site returns the named site, or nil when the lab has none by that name.
func (l *Lab) Site(name string) *Site {
	rt, ok := l.byName[name]
	if !ok {
		return nil
	}
	return &Site{lab: l, rt: rt}
}

// Sites returns every site in topology order.
func (l *Lab) Sites() []*Site {
	out := make([]*Site, len(l.sites))
	for i, rt := range l.sites {
		out[i] = &Site{lab: l, rt: rt}
	}
	return out
}

// Name is the site's name in the topology.
func (s *Site) Name() string { return s.rt.spec.Name }

// NetNS is the name of the site's namespace (for `ip netns exec`).
func (s *Site) NetNS() string { return s.rt.ns.name }

// Addrs lists the site's addresses.
func (s *Site) Addrs() []Addr { return append([]Addr(nil), s.rt.spec.Addrs...) }

// Addr returns the site's first address on path of the given family.
func (s *Site) Addr(path string, v6 bool) (netip.Addr, bool) {
	for _, a := range s.rt.spec.Addrs {
		if a.Path == path && a.Addr.Is6() == v6 {
			return a.Addr, true
		}
	}
	return netip.Addr{}, false
}

// Do runs f on an OS thread inside the site's namespace. Sockets f opens
// stay in the namespace and may be used from any goroutine afterwards.
func (s *Site) Do(f func() error) error { return s.rt.ns.do(f) }

// Exec runs a command inside the namespace and returns its combined output.
func (s *Site) Exec(args ...string) (string, error) {
	if len(args) == 0 {
		return "", fmt.Errorf("exec in %s: no command", s.Name())
	}
	out, err := exec.Command("ip", append([]string{"netns", "exec", s.NetNS()}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in site %s: %s: %w", s.Name(), strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Command prepares a command that runs inside the namespace, for long-lived
// processes (agents). `ip netns exec` execs the program, so cmd.Process is
// the program itself and killing it leaves nothing behind.
func (s *Site) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.NetNS(), name}, args...)...)
}

// DialContext opens a connection from inside the namespace.
func (s *Site) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := s.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen opens a listener inside the namespace.
func (s *Site) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := s.Do(func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside the namespace.
func (s *Site) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := s.Do(func() (err error) {
		pc, err = net.ListenPacket(network, address)
		return err
	})
	return pc, err
}
