// Package rawsock holds what the path features' raw sockets (probe/trace,
// probe/pmtu) share: the receive loop.
package rawsock

import (
	"errors"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ReadLoop reads packets from f until it is closed, handing each (with the
// sender's address and the receive time) to handle. The buffer is reused:
// handle must not keep b.
func ReadLoop(f *os.File, handle func(b []byte, from netip.Addr, at time.Time)) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return // closed
		}
		if rerr != nil {
			continue
		}
		at := time.Now()
		var a netip.Addr
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			a = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			a = netip.AddrFrom16(sa.Addr)
		}
		handle(buf[:n], a, at)
	}
}
