package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/awstest"
	"github.com/probed/probed/internal/netlab"
)

type demoFlags struct {
	probed, mesh, prometheus, promListen, awsListen string
	basePort                                        int
	aws                                             bool
}

// agentPort is the port every agent listens on inside its namespace.
const agentPort = 9447

// awsNSPort is where the AWS test server answers inside every namespace
// (each namespace has its own loopback).
const awsNSPort = 4599

// runDemo brings up the 7-site lab with one probed per site, forwards each
// agent's HTTP port to the host, optionally runs the AWS test server and a
// Prometheus scraping all seven, and waits for Ctrl-C. Everything it starts
// is stopped and every namespace removed on the way out.
func runDemo(ctx context.Context, control string, f demoFlags) error {
	tmp, err := os.MkdirTemp("", "netlab-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bin := f.probed
	if bin == "" {
		bin = filepath.Join(tmp, "probed")
		fmt.Println("building probed ...")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/probed")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building probed (run from the repository root, or pass --probed): %w", err)
		}
	}
	mesh, err := filepath.Abs(f.mesh)
	if err != nil {
		return err
	}

	topo := netlab.DefaultTopology()
	topo.Prefix = netlab.NSPrefix
	lab, err := netlab.Start(ctx, topo)
	if err != nil {
		return err
	}
	defer func() { _ = lab.Close() }()
	go func() {
		if err := lab.ServeControl(ctx, control); err != nil {
			fmt.Fprintln(os.Stderr, "netlab: control socket:", err)
		}
	}()

	var agentEnv []string
	var awsURL string
	if f.aws {
		srv, url, env, err := startAWS(ctx, lab, f.awsListen)
		if err != nil {
			return err
		}
		defer func() { _ = srv.Close() }()
		awsURL, agentEnv = url, env
		if mesh, err = withAWSSection(mesh, tmp); err != nil {
			return err
		}
	}

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			if p.Process != nil {
				_ = p.Process.Signal(os.Interrupt)
			}
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	type agentInfo struct{ site, url, log string }
	var agents []agentInfo
	agentAddr := agentAddrs(mesh)
	for i, s := range lab.Sites() {
		addr, ok := s.Addr(netlab.PathSiteLink, false)
		if !ok {
			return fmt.Errorf("site %s has no sitelink IPv4 address", s.Name())
		}
		// The agents listen on their sites[].agent address when the lab
		// has it, so each console reaches its peers for the whole mesh.
		host := addr.String()
		if a, ok := agentAddr[s.Name()]; ok && slices.ContainsFunc(s.Addrs(), func(x netlab.Addr) bool { return x.Addr.String() == a }) {
			host = a
		}
		listen := net.JoinHostPort(host, strconv.Itoa(agentPort))
		logFile := filepath.Join(tmp, s.Name()+".log")
		lf, err := os.Create(logFile)
		if err != nil {
			return err
		}
		defer lf.Close()
		cmd := s.Command(context.WithoutCancel(ctx), bin, "--config.file="+mesh, "--site="+s.Name(), "--web.listen-address="+listen,
			"--storage.path="+filepath.Join(tmp, s.Name()))
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.Env = append(os.Environ(), agentEnv...)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting probed in %s: %w", s.Name(), err)
		}
		procs = append(procs, cmd)
		fwd := fmt.Sprintf("127.0.0.1:%d", f.basePort+i+1)
		if _, err := s.Forward(ctx, fwd, listen); err != nil {
			return err
		}
		agents = append(agents, agentInfo{s.Name(), "http://" + fwd + "/", logFile})
	}

	var promURL string
	if p, err := exec.LookPath(f.prometheus); f.prometheus != "" && err == nil {
		cmd, err := startPrometheus(p, tmp, f.promListen, f.basePort, lab)
		if err != nil {
			return err
		}
		procs = append(procs, cmd)
		promURL = "http://" + f.promListen
	}

	fmt.Println()
	printSites(lab)
	fmt.Println("\nagents (one probed per site; each console shows the whole mesh, /metrics beside it):")
	for _, a := range agents {
		fmt.Printf("  %-13s %s   log: %s\n", a.site, a.url, a.log)
	}
	if promURL != "" {
		fmt.Printf("\nPrometheus scraping all seven: %s  (try: probed_rtt_seconds_sum / probed_rtt_seconds_count, or up)\n", promURL)
	} else {
		fmt.Println("\nPrometheus not found (Debian package prometheus): skipped.")
	}
	if awsURL != "" {
		fmt.Printf("AWS test server: %s  (state changes: POST %s/_awstest/bgp?vif=...&peer=...&status=down)\n", awsURL, awsURL)
	}
	fmt.Printf("\nchange the network:  go run ./cmd/netlab set --from us-east --to eu-frankfurt --path sitelink --delay 80ms --loss 1%%\n")
	fmt.Println("                     (the console's timeline shows the latency shift a couple of minutes later, the matrix at once)")
	fmt.Printf("look inside a site:  ip netns exec %s ping 10.77.7.1\n", lab.Site("us-east").NetNS())
	if len(agents) > 0 {
		fmt.Printf("\n>>> open the console: %s <<<\n", agents[0].url)
	}
	fmt.Println("\nCtrl-C stops everything and removes the namespaces.")
	<-ctx.Done()
	fmt.Println("\nstopping ...")
	return nil
}

// startAWS runs the AWS test server with the built-in 7-site fixture: on the
// host for curl, and on 127.0.0.1 inside every site namespace for the
// agents, with credentials and endpoint in their environment.
func startAWS(ctx context.Context, lab *netlab.Lab, hostListen string) (*awstest.Server, string, []string, error) {
	srv := awstest.New(nil)
	url, err := srv.Start(hostListen)
	if err != nil {
		return nil, "", nil, err
	}
	for _, s := range lab.Sites() {
		ln, err := s.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", awsNSPort))
		if err != nil {
			_ = srv.Close()
			return nil, "", nil, fmt.Errorf("AWS test server in %s: %w", s.Name(), err)
		}
		hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		go func() { <-ctx.Done(); _ = hs.Close() }()
	}
	env := []string{
		fmt.Sprintf("AWS_ENDPOINT_URL=http://127.0.0.1:%d", awsNSPort),
		"AWS_ACCESS_KEY_ID=AKIDNETLABDEMO", "AWS_SECRET_ACCESS_KEY=netlab-demo", "AWS_SESSION_TOKEN=",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
	return srv, url, env, nil
}

// withAWSSection copies the mesh file with an aws: section added when it
// has none, so the agents poll the AWS test server.
func withAWSSection(mesh, dir string) (string, error) {
	b, err := os.ReadFile(mesh)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "aws:") {
			return mesh, nil
		}
	}
	out := filepath.Join(dir, "mesh.yaml")
	b = append(b, []byte("\n# Added by netlab demo: poll the AWS test server.\naws:\n  interval: 30s\n")...)
	return out, os.WriteFile(out, b, 0o644)
}

// startPrometheus runs a Prometheus that scrapes the seven forwarded agents.
func startPrometheus(bin, dir, listen string, basePort int, lab *netlab.Lab) (*exec.Cmd, error) {
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n")
	// The project's recording and alerting rules, when run from the repository.
	if rules, _ := filepath.Glob("deploy/prometheus/*.rules.yml"); len(rules) > 0 {
		b.WriteString("rule_files:\n")
		for _, r := range rules {
			abs, _ := filepath.Abs(r)
			fmt.Fprintf(&b, "  - %s\n", abs)
		}
	}
	b.WriteString("scrape_configs:\n  - job_name: probed\n    static_configs:\n")
	for i, s := range lab.Sites() {
		// agent_site, not site: the AWS series carry their own site label.
		fmt.Fprintf(&b, "      - targets: ['127.0.0.1:%d']\n        labels: {agent_site: %s}\n", basePort+i+1, s.Name())
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+listen, "--storage.tsdb.retention.time=1d")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting Prometheus: %w", err)
	}
	// Fail early on a taken port rather than print a dead URL.
	for i := 0; i < 50; i++ {
		if resp, err := http.Get("http://" + listen + "/-/ready"); err == nil {
			resp.Body.Close()
			return cmd, nil
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, errors.New("prometheus did not become ready in 10 s: see " + logf.Name())
}

// agentAddrs reads sites[].agent from the mesh file (nothing if it does
// not load: the agents will say why).
func agentAddrs(mesh string) map[string]string {
	out := map[string]string{}
	cfg, err := config.Load(mesh)
	if err != nil {
		return out
	}
	for _, s := range cfg.Sites {
		if s.Agent != "" {
			out[s.Name] = s.Agent
		}
	}
	return out
}
