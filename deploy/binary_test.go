package deploy

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// buildDir holds the binary built once for all tests of the package.
var buildDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "probed-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// dockerfileInstr is one Dockerfile instruction with continuations joined.
type dockerfileInstr struct {
	Cmd, Args string
	Stage     int // index of the FROM it belongs to
}

func parseDockerfile(t testing.TB) []dockerfileInstr {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerfileInstr
	stage := -1
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerfileInstr{Cmd: cmd, Args: strings.TrimSpace(args), Stage: stage})
		cur = ""
	}
	return out
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// dockerBuildCommand is the Dockerfile's `RUN ... go build ...` line.
func dockerBuildCommand(t testing.TB) string {
	t.Helper()
	for _, in := range parseDockerfile(t) {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			return in.Args
		}
	}
	t.Fatal("Dockerfile: no RUN ... go build line")
	return ""
}

// probedBinary builds ./cmd/probed exactly as the Dockerfile does (its RUN
// line, with the output redirected) and returns the binary's path.
func probedBinary(t testing.TB) string {
	t.Helper()
	cmdline := dockerBuildCommand(t)
	buildOnce.Do(func() {
		buildPath = filepath.Join(buildDir, "probed")
		sh := strings.ReplaceAll(cmdline, "/out/probed", buildPath)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", sh)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "VERSION=deploy-test")
		cmd.WaitDelay = 10 * time.Second // a killed sh must not leave us waiting on go build's pipes
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%s: %v\n%s", sh, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building probed the Dockerfile's way: %v", buildErr)
	}
	return buildPath
}

// TestDockerfile checks the image's shape (multi-stage, static binary,
// non-root, CAP_NET_RAW only, healthcheck) and builds the binary with the
// Dockerfile's own command: static, and it runs.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t)
	last := ins[len(ins)-1].Stage
	var froms, users, health, setcap, entry, expose []string
	for _, in := range ins {
		switch {
		case in.Cmd == "FROM":
			froms = append(froms, in.Args)
		case in.Stage != last:
		case in.Cmd == "USER":
			users = append(users, in.Args)
		case in.Cmd == "HEALTHCHECK":
			health = append(health, in.Args)
		case in.Cmd == "RUN" && strings.Contains(in.Args, "setcap cap_"):
			setcap = append(setcap, in.Args)
		case in.Cmd == "ENTRYPOINT":
			entry = append(entry, in.Args)
		case in.Cmd == "EXPOSE":
			expose = append(expose, in.Args)
		}
	}
	if len(froms) < 2 || !strings.Contains(strings.ToLower(froms[0]), " as build") {
		t.Errorf("want a multi-stage build with a build stage, got FROM %v", froms)
	}
	if len(users) == 0 {
		t.Error("final stage runs as root: no USER")
	} else if u := strings.Split(users[len(users)-1], ":")[0]; u == "0" || u == "root" {
		t.Errorf("final stage USER %s is root", u)
	}
	if len(health) != 1 || !strings.Contains(health[0], "/-/healthy") {
		t.Errorf("want a HEALTHCHECK on /-/healthy, got %v", health)
	}
	if len(setcap) != 1 || !regexp.MustCompile(`setcap cap_net_raw,cap_net_bind_service\+ep /usr/bin/probed`).MatchString(setcap[0]) {
		t.Errorf("want the binary to get exactly cap_net_raw and cap_net_bind_service, got %v", setcap)
	}
	if len(entry) != 1 || !strings.Contains(entry[0], "/usr/bin/probed") {
		t.Errorf("ENTRYPOINT %v", entry)
	}
	if len(expose) != 1 || expose[0] != "9447" {
		t.Errorf("EXPOSE %v, want 9447", expose)
	}
	// The build stage's Go is the one go.mod asks for (no toolchain
	// download inside the build).
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	argVersion := ""
	for _, in := range ins {
		if in.Cmd == "ARG" && strings.HasPrefix(in.Args, "GO_VERSION=") {
			argVersion = strings.TrimPrefix(in.Args, "GO_VERSION=")
		}
	}
	if goVersion == nil || argVersion != string(goVersion[1]) {
		t.Errorf("Dockerfile ARG GO_VERSION=%s, go.mod says go %s", argVersion, goVersion)
	}
	if !strings.Contains(froms[0], "golang:${GO_VERSION}") {
		t.Errorf("build stage %q does not use GO_VERSION", froms[0])
	}
	b := dockerBuildCommand(t)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/probed", "-o /out/probed", "main.version=${VERSION}"} {
		if !strings.Contains(b, want) {
			t.Errorf("build line %q lacks %q", b, want)
		}
	}

	bin := probedBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v: not static", libs)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "deploy-test") {
		t.Errorf("probed --version: %v: %s (want the VERSION build arg)", err, out)
	}
}

// loopbackMesh is a mesh file for one agent probing loopback inside a
// throw-away namespace.
const loopbackMesh = `site: lab
probe:
  interval: 100ms
  timeout: 500ms
  down_after: 2
sites:
  - name: lab
    targets:
      - address: 127.0.0.9
  - name: peer
    targets:
      - address: 127.0.0.1
        path: sitelink
        segment: prod
`

// unprivileged is the uid/gid the container image and the systemd unit's
// user stand for.
const unprivileged = 10001

// agentInNS runs the probed binary inside ns as an unprivileged user with
// the given ambient capabilities, and returns an HTTP client that reaches
// the namespace's loopback and the process's output so far.
func agentInNS(t *testing.T, ns *testutil.NetNS, ambient []uintptr, args ...string) (*exec.Cmd, *http.Client, func() string) {
	t.Helper()
	var mu sync.Mutex
	var buf strings.Builder
	cmd := exec.Command(args[0], args[1:]...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := pr.Read(b)
			mu.Lock()
			buf.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: unprivileged, Gid: unprivileged},
		AmbientCaps: ambient,
		Setpgid:     true,
	}
	// Started from a thread inside the namespace: the child is born there.
	if err := ns.Do(cmd.Start); err != nil {
		t.Fatalf("starting %v in %s: %v", args, ns.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		pw.Close()
		if t.Failed() {
			mu.Lock()
			t.Logf("probed output:\n%s", tail(buf.String(), 6000))
			mu.Unlock()
		}
	})
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
	return cmd, client, output
}

// scrapeValue returns the value of the first series whose line starts with
// prefix (metric name and labels as exposed), or -1.
func scrapeValue(c *http.Client, url, prefix string) float64 {
	resp, err := c.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, prefix) {
			f := strings.Fields(l)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// waitFor polls cond every 100ms until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// privateCopy copies the binary into a directory the unprivileged user can
// reach, with the mesh file next to it.
func privateCopy(t *testing.T, bin string) (dir, binCopy, mesh string) {
	t.Helper()
	// Not t.TempDir(): its parent is private to root.
	dir, err := os.MkdirTemp("", "probed-deploy-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	binCopy = filepath.Join(dir, "probed")
	if err := os.WriteFile(binCopy, b, 0o755); err != nil {
		t.Fatal(err)
	}
	mesh = filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(loopbackMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, binCopy, mesh
}

const upSeries = `probed_target_up{source_site="lab",target_site="peer",target="127.0.0.1",path="sitelink",segment="prod",protocol="icmp",port=""}`

// TestContainerPrivileges runs the binary as the image does: user 10001, no
// capabilities but the file capabilities the Dockerfile sets, in a
// namespace where unprivileged ping sockets are not allowed. It must probe
// with raw sockets and answer the healthcheck; without the file capability
// it must refuse to start with a message naming CAP_NET_RAW.
func TestContainerPrivileges(t *testing.T) {
	testutil.RequireRoot(t)
	setcap := tool(t, "setcap", "libcap2-bin")
	bin := probedBinary(t)
	_, plain, mesh := privateCopy(t, bin)

	ns := testutil.NewNetNS(t)
	if out := ns.MustRun(t, "sysctl", "-n", "net.ipv4.ping_group_range"); strings.TrimSpace(out) != "1\t0" && strings.TrimSpace(out) != "1 0" {
		t.Fatalf("a new namespace should forbid unprivileged ping sockets, ping_group_range=%q", out)
	}

	t.Run("without capability", func(t *testing.T) {
		cmd, _, output := agentInNS(t, ns, nil, plain, "--config.file="+mesh, "--web.listen-address=127.0.0.1:9447")
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("probed without CAP_NET_RAW exited 0:\n%s", output())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("probed without CAP_NET_RAW kept running:\n%s", output())
		}
		if !strings.Contains(output(), "CAP_NET_RAW") {
			t.Errorf("the refusal does not tell how to grant CAP_NET_RAW:\n%s", output())
		}
	})

	t.Run("with the image's file capability", func(t *testing.T) {
		dir, capped, _ := privateCopy(t, bin)
		runTool(t, dir, setcap, "cap_net_raw,cap_net_bind_service+ep", capped)
		_, client, output := agentInNS(t, ns, nil, capped, "--config.file="+mesh, "--web.listen-address=127.0.0.1:9447")
		waitFor(t, 20*time.Second, "/-/healthy", func() bool {
			resp, err := client.Get("http://127.0.0.1:9447/-/healthy")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		waitFor(t, 20*time.Second, "loopback reported up", func() bool {
			return scrapeValue(client, "http://127.0.0.1:9447/metrics", upSeries) == 1
		})
		if !strings.Contains(output(), "raw") {
			t.Errorf("expected raw ICMP sockets, log:\n%s", output())
		}
	})
}
