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

	// A listed sender keeps measuring during the flood.
	rec := newRecorder()
	snd, err := NewSender(SenderConfig{Target: "10.88.0.2", Source: "10.88.0.1", Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond, Observer: rec})
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
	// 20,000 per second for 2 s, paced in bursts of 200 every 10 ms.
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
	const rate, dur = 20000, 2 * time.Second
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
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-sdone; err != nil {
		t.Fatal(err)
	}

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
	perPkt := cpu / time.Duration(max(st.NotAllowed, 1))
	t.Logf("flood: %d packets in %v (%.0f/s) from an unlisted source, %d answered; reflector read %d of them (not_allowed), reflected %d for the listed sender (%d sent, %d replies)",
		flooded, floodTime.Round(time.Millisecond), float64(flooded)/floodTime.Seconds(), got, st.NotAllowed, st.Reflected, rec.sent, rec.replies)
	t.Logf("reflector process CPU (getrusage via wait4): user %v + system %v = %v over the whole run, %.0f%% of one core during the flood, %v per flood packet",
		time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), cpu, 100*cpu.Seconds()/floodTime.Seconds(), perPkt)

	if got != 0 {
		t.Errorf("the unlisted source got %d answers", got)
	}
	if st.NotAllowed < uint64(flooded)/2 {
		t.Errorf("reflector saw only %d of %d flood packets (the budget below would be meaningless)", st.NotAllowed, flooded)
	}
	if rec.replies < rec.sent*9/10 {
		t.Errorf("the listed sender got %d replies for %d packets during the flood", rec.replies, rec.sent)
	}
	// Budget: dropping an unlisted datagram is one recvmsg and one map
	// lookup, a few µs. 30 µs per packet (60% of a core at 20,000/s) leaves
	// room for a loaded shared 2-core machine and still fails a reflector
	// that does real work (parsing, state, replying) for unlisted sources.
	if perPkt > 30*time.Microsecond {
		t.Errorf("reflector used %v of CPU per flood packet, budget 30µs", perPkt)
	}
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
