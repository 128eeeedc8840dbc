package tracetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/internal/inet"
	"github.com/probed/probed/internal/testutil"
)

// OldRouter is an IPv4 router that predates RFC 1191: a DF packet larger
// than its next-hop MTU gets Fragmentation Needed with the next-hop MTU
// field 0 (RFC 792 left those bytes unused). The kernel's routers always
// fill the field, so this one lives in user space behind a TUN device in
// the namespace it is made in: packets to Dst go into the device, packets
// of up to MTU bytes reach a target that answers echo requests, bigger
// ones with DF are refused from Router.
type OldRouter struct {
	// Dst is the target behind the router, Router the router's address.
	Dst, Router netip.Addr
	mtu         atomic.Int32
	// Refused counts the Fragmentation Needed messages sent.
	Refused atomic.Uint64
	f       *os.File
	wg      sync.WaitGroup
}

// OldRouterDevice is the TUN device's name; its network is 10.203.0.0/24.
const OldRouterDevice = "old0"

// NewOldRouter starts an old router with the given next-hop MTU in ns; it
// stops when the test ends.
func NewOldRouter(t testing.TB, ns *testutil.NetNS, mtu int) *OldRouter {
	t.Helper()
	r := &OldRouter{Dst: netip.MustParseAddr("10.203.0.9"), Router: netip.MustParseAddr("10.203.0.2")}
	r.mtu.Store(int32(mtu))
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("opening /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(OldRouterDevice)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		r.f = os.NewFile(uintptr(fd), OldRouterDevice)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.MustRun(t, "ip", "link", "set", OldRouterDevice, "mtu", fmt.Sprint(JumboMTU), "up")
	ns.MustRun(t, "ip", "addr", "add", "10.203.0.1/24", "dev", OldRouterDevice)
	r.wg.Add(1)
	go r.run()
	t.Cleanup(func() {
		r.f.Close()
		r.wg.Wait()
	})
	return r
}

// SetMTU changes the router's next-hop MTU.
func (r *OldRouter) SetMTU(mtu int) { r.mtu.Store(int32(mtu)) }

func (r *OldRouter) run() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := r.f.Read(buf)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil || n < 28 {
			continue
		}
		if out := r.answer(buf[:n]); out != nil {
			_, _ = r.f.Write(out)
		}
	}
}

// answer returns what the router (or the target) sends back for pkt.
func (r *OldRouter) answer(pkt []byte) []byte {
	if pkt[0]>>4 != 4 || netip.AddrFrom4([4]byte(pkt[16:20])) != r.Dst {
		return nil
	}
	ihl := int(pkt[0]&0x0f) * 4
	df := pkt[6]&0x40 != 0
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	if df && len(pkt) > int(r.mtu.Load()) {
		r.Refused.Add(1)
		// Type 3 code 4, the next-hop MTU field left 0; the quote is
		// the IP header and the first 8 bytes of the datagram.
		q := pkt[:min(len(pkt), ihl+8)]
		m := make([]byte, 8+len(q))
		m[0], m[1] = 3, 4
		copy(m[8:], q)
		binary.BigEndian.PutUint16(m[2:], inet.Checksum(m))
		return ipv4(r.Router, src, 1, m)
	}
	if pkt[9] != 1 || len(pkt) < ihl+8 || pkt[ihl] != 8 {
		return nil
	}
	m := append([]byte(nil), pkt[ihl:]...)
	m[0] = 0
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], inet.Checksum(m))
	return ipv4(r.Dst, src, 1, m)
}

func ipv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], inet.Checksum(b[:20]))
	copy(b[20:], payload)
	return b
}
