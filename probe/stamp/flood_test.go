package stamp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// reflectorProcessEnv makes the test binary act as a standalone reflector
// (see TestMain): the flood test measures that process's CPU time alone.
const reflectorProcessEnv = "PROBED_STAMP_REFLECTOR_PROCESS"

func TestMain(m *testing.M) {
	if addr := os.Getenv(reflectorProcessEnv); addr != "" {
		os.Exit(reflectorProcess(addr))
	}
	os.Exit(m.Run())
}

// reflectorProcess serves a reflector on addr answering only 10.88.0.1
// until SIGTERM, then prints its stats as JSON.
func reflectorProcess(addr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	al, _ := NewAllowList([]string{"10.88.0.1"})
	r, err := NewReflector(ReflectorConfig{Allow: al, RateLimit: 1000, Burst: 100})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := Listen(ctx, "udp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Serve(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(r.Stats())
	return 0
}

func TestReflectorFloodFromUnlistedSource(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLab(t)
	var out bytes.Buffer
	cmd := exec.Command("ip", "netns", "exec", l.b.Name, os.Args[0])
	cmd.Env = append(os.Environ(), reflectorProcessEnv+"=10.88.0.2:862")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	// Wait until it answers the listed source.
	probe := (&SenderPacket{Seq: 1}).AppendSender(nil, Unauthenticated)
	deadline := time.Now().Add(10 * time.Second)
	for rawExchangeFrom(t, l.a, "10.88.0.1", "10.88.0.2:862", probe) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("reflector process never answered: %s", out.String())
		}
	}

	// A listed sender keeps measuring during the flood, 500 packets/s.
	rec := newRecorder()
	snd, err := NewSender(SenderConfig{Target: "10.88.0.2", Source: "10.88.0.1", Interval: 2 * time.Millisecond, Timeout: 200 * time.Millisecond, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.a.Do(func() error { return snd.Open(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() { sdone <- snd.Run(ctx) }()

	// The flood: valid STAMP packets from 10.88.0.3 (not in the mesh),
	// 30,000 per second for 2 s, paced in bursts of 300 every 10 ms: more
	// than the default 208 KB receive buffer holds while the reader waits
	// for a CPU on a busy machine.
	var fc *net.UDPConn
	if err := l.a.Do(func() error {
		var err error
		fc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.88.0.3:0")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	replies := make(chan int, 1)
	go func() {
		n := 0
		buf := make([]byte, 2048)
		for {
			fc.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := fc.Read(buf); err != nil {
				replies <- n
				return
			}
			n++
		}
	}()
	udpBefore := udpStats(t, l.b)
	const rate, dur = 30000, 2 * time.Second
	dst := netip.MustParseAddrPort("10.88.0.2:862")
	pkt := (&SenderPacket{Seq: 1, SSID: 9}).AppendSender(nil, Unauthenticated)
	flooded := 0
	start := time.Now()
	for tick := start; time.Since(start) < dur; tick = tick.Add(10 * time.Millisecond) {
		for range rate / 100 {
			if _, err := fc.WriteToUDPAddrPort(pkt, dst); err == nil {
				flooded++
			}
		}
		time.Sleep(time.Until(tick.Add(10 * time.Millisecond)))
	}
	floodTime := time.Since(start)
	time.Sleep(400 * time.Millisecond) // every listed packet resolved
	cancel()
	if err := <-sdone; err != nil {
		t.Fatal(err)
	}
	udpAfter := udpStats(t, l.b)

	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Fatalf("reflector process: %v: %s", err, out.String())
	}
	var st ReflectorStats
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("reflector stats %q: %v", out.String(), err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	got := <-replies
	rec.mu.Lock()
	defer rec.mu.Unlock()
	bufDrops := udpAfter["RcvbufErrors"] - udpBefore["RcvbufErrors"]
	inErrs := udpAfter["InErrors"] - udpBefore["InErrors"]
	lost := rec.fwd + rec.rev + rec.unknown + rec.unattributed
	perPkt := cpu / time.Duration(max(flooded, 1))
	t.Logf("flood: %d packets in %v (%.0f/s) from an unlisted source, %d answered", flooded, floodTime.Round(time.Millisecond), float64(flooded)/floodTime.Seconds(), got)
	t.Logf("reflector namespace, kernel UDP counters during the flood: RcvbufErrors +%d (receive buffer full), InErrors +%d (those plus socket-filter drops)", bufDrops, inErrs)
	t.Logf("reflector: socket drops %d, read and refused in user space %d (not_allowed), reflected %d; listed sender: %d sent, %d replies, lost forward %d reverse %d unknown %d unattributed %d",
		st.SocketDrops, st.NotAllowed, st.Reflected, rec.sent, rec.replies, rec.fwd, rec.rev, rec.unknown, rec.unattributed)
	t.Logf("reflector process CPU (getrusage via wait4): user %v + system %v = %v over the whole run, %v per flood packet",
		time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), cpu, perPkt)

	if got != 0 {
		t.Errorf("the unlisted source got %d answers", got)
	}
	// The listed session loses nothing: no receive-buffer overflow in the
	// reflector's namespace, every packet sent was answered.
	if bufDrops != 0 || lost != 0 || rec.replies < rec.sent-1 {
		t.Errorf("listed session during the flood: %d receive-buffer drops, %d lost, %d replies of %d sent", bufDrops, lost, rec.replies, rec.sent)
	}
	// The flood is dropped by the socket filter in the kernel, before it
	// takes space in the receive buffer or a read in the reflector.
	if st.SocketDrops < uint64(flooded)*99/100 || st.NotAllowed > uint64(flooded)/100 {
		t.Errorf("of %d flood packets, %d dropped by the socket filter and %d read by the reflector", flooded, st.SocketDrops, st.NotAllowed)
	}
	// Budget: 30 µs of the reflector's CPU per flood packet was the
	// user-space budget; dropped in the kernel, it costs the process
	// almost nothing.
	if perPkt > 30*time.Microsecond {
		t.Errorf("reflector used %v of CPU per flood packet, budget 30µs", perPkt)
	}
}

// udpStats reads the Udp: line of /proc/net/snmp in ns (the kernel's UDP
// counters of that namespace).
func udpStats(t *testing.T, ns *testutil.NetNS) map[string]uint64 {
	t.Helper()
	out := ns.MustRun(t, "cat", "/proc/net/snmp")
	var names, values []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Udp:" {
			if names == nil {
				names = f[1:]
			} else {
				values = f[1:]
			}
		}
	}
	m := map[string]uint64{}
	for i := range min(len(names), len(values)) {
		m[names[i]], _ = strconv.ParseUint(values[i], 10, 64)
	}
	if _, ok := m["RcvbufErrors"]; !ok {
		t.Fatalf("no Udp RcvbufErrors in /proc/net/snmp: %q", out)
	}
	return m
}

// rawExchangeFrom is rawExchange from a given source address.
func rawExchangeFrom(t *testing.T, ns *testutil.NetNS, src, addr string, pkt []byte) []byte {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src+":0")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteToUDPAddrPort(pkt, netip.MustParseAddrPort(addr))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// TestReflectorSocketFilter: the allow-list is enforced in the kernel by
// the sockets' filter, for IPv4 and IPv6 addresses and prefixes; a reload
// (SetAllow) changes it on the running sockets; a list too long for a
// filter falls back to the user-space check.
func TestReflectorSocketFilter(t *testing.T) {
	ns := testutil.NewNetNS(t)
	ns.MustRun(t, "ip", "addr", "add", "fd77::1/64", "dev", "lo", "nodad")
	ns.MustRun(t, "ip", "addr", "add", "fd77::2/64", "dev", "lo", "nodad")
	ns.MustRun(t, "ip", "addr", "add", "fd78:1::5/64", "dev", "lo", "nodad")
	r4 := startReflector(t, ns, "udp4", "127.0.0.1:862", ReflectorConfig{Allow: allow(t, "127.0.0.1", "127.0.2.0/24")})
	r6 := startReflector(t, ns, "udp6", "[::]:862", ReflectorConfig{Allow: allow(t, "fd77::1", "fd78::/16")})
	probe := (&SenderPacket{Seq: 1}).AppendSender(nil, Unauthenticated)
	exchange := func(network, src, dst string) bool {
		var c *net.UDPConn
		if err := ns.Do(func() error {
			var err error
			c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.WriteToUDPAddrPort(probe, netip.MustParseAddrPort(dst))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 256))
		return err == nil
	}
	check := func(r *Reflector, network, dst string, answered, refused []string) {
		t.Helper()
		before := r.Stats()
		for _, src := range answered {
			if !exchange(network, src, dst) {
				t.Errorf("%s → %s: no answer", src, dst)
			}
		}
		for _, src := range refused {
			if exchange(network, src, dst) {
				t.Errorf("%s → %s: answered an unlisted source", src, dst)
			}
		}
		after := r.Stats()
		if d := after.SocketDrops - before.SocketDrops; d != uint64(len(refused)) || after.NotAllowed != before.NotAllowed {
			t.Errorf("%s: %d dropped by the socket filter, %d refused in user space; want %d and 0",
				dst, d, after.NotAllowed-before.NotAllowed, len(refused))
		}
	}
	check(r4, "udp4", "127.0.0.1:862", []string{"127.0.0.1", "127.0.2.9"}, []string{"127.0.0.2", "127.0.3.1"})
	check(r6, "udp6", "[fd77::1]:862", []string{"fd77::1", "fd78:1::5"}, []string{"fd77::2", "::1"})

	// A reload: the running sockets' filters follow the new list.
	r4.SetAllow(allow(t, "127.0.0.2"))
	check(r4, "udp4", "127.0.0.1:862", []string{"127.0.0.2"}, []string{"127.0.0.1", "127.0.2.9"})

	// Too many entries for a socket filter: none, the reflector refuses
	// unlisted sources itself.
	many := []string{"127.0.0.1"}
	for i := range 5000 {
		many = append(many, fmt.Sprintf("10.%d.%d.1", i/250, i%250))
	}
	if _, ok := allowFilter(allow(t, many...), false); ok {
		t.Fatal("a filter for 5001 addresses fits in 4096 instructions?")
	}
	r4.SetAllow(allow(t, many...))
	before := r4.Stats()
	if !exchange("udp4", "127.0.0.1", "127.0.0.1:862") || exchange("udp4", "127.0.0.2", "127.0.0.1:862") {
		t.Error("without a socket filter the allow-list is not enforced")
	}
	if after := r4.Stats(); after.NotAllowed-before.NotAllowed != 1 || after.SocketDrops != before.SocketDrops {
		t.Errorf("without a filter: not_allowed +%d, socket drops +%d; want 1 and 0", after.NotAllowed-before.NotAllowed, after.SocketDrops-before.SocketDrops)
	}
}
