package stamp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// BenchmarkReflectorRoundTrip is one test packet through a reflector on
// loopback in a namespace: send, reflect (with CoS and Direct Measurement
// TLVs), receive. Reports the reflector's allocations as part of the total.
func BenchmarkReflectorRoundTrip(b *testing.B) {
	ns := testutil.NewNetNS(b)
	r, _ := NewReflector(ReflectorConfig{Allow: mustAllow(b, "127.0.0.1")})
	var srv, cli *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		if srv, err = Listen(context.Background(), "udp4", "127.0.0.1:862"); err != nil {
			return err
		}
		cli, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, srv)
	defer cli.Close()
	pkt := (&SenderPacket{Seq: 1, SSID: 3}).AppendSender(nil, Unauthenticated)
	pkt = AppendCoS(pkt, CoS{DSCP1: 46})
	pkt = AppendDirectMeasurement(pkt, DirectMeasurement{SenderTx: 1})
	dst := netip.MustParseAddrPort("127.0.0.1:862")
	buf := make([]byte, 2048)
	b.ReportAllocs()
	for b.Loop() {
		cli.WriteToUDPAddrPort(pkt, dst)
		cli.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := cli.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSenderHandleReply is the sender's per-reply work (parse, match,
// delays, variation windows, observer) without the socket.
func BenchmarkSenderHandleReply(b *testing.B) {
	s, _ := NewSender(SenderConfig{Target: "127.0.0.1", Interval: time.Millisecond, Timeout: 100 * time.Millisecond, Clock: FixedClock{Synced: true}})
	t1 := time.Now()
	rp := ReflectorPacket{SSID: s.SSID(), ReceiveTimestamp: ToNTP(t1.Add(time.Millisecond)), Timestamp: ToNTP(t1.Add(1100 * time.Microsecond))}
	pkt := rp.AppendReflector(nil, Unauthenticated)
	pkt = AppendCoS(pkt, CoS{DSCP1: 46, DSCP2: 46})
	pkt = AppendDirectMeasurement(pkt, DirectMeasurement{SenderTx: 1, ReflectorRx: 1, ReflectorTx: 1})
	pkt[BaseLen], pkt[BaseLen+TLVHeaderLen+cosLen] = 0, 0 // processed by the reflector: U cleared
	meta := rxMeta{tos: 0xb8, hasTOS: true}
	b.ReportAllocs()
	for b.Loop() {
		s.mu.Lock()
		seq := s.next
		s.next++
		s.ring[seq%uint32(len(s.ring))] = slot{seq: seq, state: slotPending, t1: t1}
		s.mu.Unlock()
		rp.SenderSeq, rp.Seq = seq, seq
		rp.PutReflector(pkt, Unauthenticated)
		s.handleReply(pkt, &meta, t1.Add(2*time.Millisecond))
	}
}

func mustAllow(b *testing.B, e ...string) *AllowList {
	a, err := NewAllowList(e)
	if err != nil {
		b.Fatal(err)
	}
	return a
}
