package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func readYAML(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type meshSites struct {
	Sites []struct {
		Name  string `yaml:"name"`
		Agent string `yaml:"agent"`
	} `yaml:"sites"`
}

// TestKubernetesManifests checks the base Deployment's privileges and
// probes, and that every site's overlay points the agent at its own site of
// the mesh ConfigMap, which the real `probed check-config` accepts for that
// site. (kubectl is not on CI machines; `kubectl kustomize
// deploy/kubernetes/overlays/<site>` renders them where it is.)
func TestKubernetesManifests(t *testing.T) {
	var dep struct {
		Spec struct {
			Replicas int `yaml:"replicas"`
			Template struct {
				Spec struct {
					SecurityContext struct {
						RunAsNonRoot bool `yaml:"runAsNonRoot"`
						RunAsUser    int  `yaml:"runAsUser"`
					} `yaml:"securityContext"`
					Containers []struct {
						Args []string `yaml:"args"`
						Env  []struct {
							Name  string `yaml:"name"`
							Value string `yaml:"value"`
						} `yaml:"env"`
						Ports []struct {
							ContainerPort int `yaml:"containerPort"`
						} `yaml:"ports"`
						LivenessProbe struct {
							HTTPGet struct{ Path string } `yaml:"httpGet"`
						} `yaml:"livenessProbe"`
						ReadinessProbe struct {
							HTTPGet struct{ Path string } `yaml:"httpGet"`
						} `yaml:"readinessProbe"`
						SecurityContext struct {
							ReadOnlyRootFilesystem bool `yaml:"readOnlyRootFilesystem"`
							Capabilities           struct {
								Drop []string `yaml:"drop"`
								Add  []string `yaml:"add"`
							} `yaml:"capabilities"`
						} `yaml:"securityContext"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAML(t, "kubernetes/base/deployment.yaml", &dep)
	ps := dep.Spec.Template.Spec
	if dep.Spec.Replicas != 1 {
		t.Errorf("replicas %d: one agent per site", dep.Spec.Replicas)
	}
	if !ps.SecurityContext.RunAsNonRoot || ps.SecurityContext.RunAsUser != unprivileged {
		t.Errorf("pod must run as non-root uid %d (the image's user), got %+v", unprivileged, ps.SecurityContext)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(ps.Containers))
	}
	c := ps.Containers[0]
	caps := c.SecurityContext.Capabilities
	if strings.Join(caps.Drop, ",") != "ALL" || strings.Join(caps.Add, ",") != "NET_RAW,NET_BIND_SERVICE" {
		t.Errorf("capabilities drop %v add %v, want drop ALL add NET_RAW and NET_BIND_SERVICE only", caps.Drop, caps.Add)
	}
	if !c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("root filesystem must be read-only")
	}
	if c.LivenessProbe.HTTPGet.Path != "/-/healthy" || c.ReadinessProbe.HTTPGet.Path != "/-/ready" {
		t.Errorf("probes %q / %q, want /-/healthy and /-/ready", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9447 {
		t.Errorf("ports %+v, want 9447", c.Ports)
	}
	if len(c.Env) == 0 || c.Env[0].Name != "PROBED_SITE" {
		t.Fatalf("env[0] must be PROBED_SITE (the overlays patch it by index), got %+v", c.Env)
	}

	var base struct {
		Resources          []string `yaml:"resources"`
		ConfigMapGenerator []struct {
			Files []string `yaml:"files"`
		} `yaml:"configMapGenerator"`
	}
	readYAML(t, "kubernetes/base/kustomization.yaml", &base)
	for _, r := range []string{"deployment.yaml", "service.yaml", "servicemonitor.yaml"} {
		if !strings.Contains(strings.Join(base.Resources, ","), r) {
			t.Errorf("base kustomization lacks %s", r)
		}
	}
	var mesh meshSites
	readYAML(t, "kubernetes/base/mesh.yaml", &mesh)

	bin := probedBinary(t)
	overlays, _ := filepath.Glob("kubernetes/overlays/*/kustomization.yaml")
	if len(overlays) != len(mesh.Sites) {
		t.Errorf("%d overlays for %d sites in the mesh", len(overlays), len(mesh.Sites))
	}
	for _, o := range overlays {
		site := filepath.Base(filepath.Dir(o))
		var k struct {
			Resources  []string `yaml:"resources"`
			NameSuffix string   `yaml:"nameSuffix"`
			Patches    []struct {
				Target struct{ Kind string } `yaml:"target"`
				Patch  string                `yaml:"patch"`
			} `yaml:"patches"`
		}
		readYAML(t, o, &k)
		if k.NameSuffix != "-"+site || len(k.Resources) != 1 || k.Resources[0] != "../../base" {
			t.Errorf("%s: nameSuffix %q resources %v", o, k.NameSuffix, k.Resources)
		}
		var ops []struct {
			Path  string `yaml:"path"`
			Value string `yaml:"value"`
		}
		setsSite := false
		for _, p := range k.Patches {
			if p.Target.Kind != "Deployment" {
				continue
			}
			if err := yaml.Unmarshal([]byte(p.Patch), &ops); err != nil {
				t.Fatalf("%s: patch: %v", o, err)
			}
			for _, op := range ops {
				if op.Path == "/spec/template/spec/containers/0/env/0/value" {
					setsSite = op.Value == site
				}
			}
		}
		if !setsSite {
			t.Errorf("%s: does not set PROBED_SITE to %s", o, site)
		}
		// The agent of this site accepts the ConfigMap's mesh file.
		runTool(t, ".", bin, "check-config", "--config.file=kubernetes/base/mesh.yaml", "--site="+site)
	}
}

// TestScrapeConfig: the example Prometheus configuration is valid (with its
// rule files) and scrapes exactly the agents of the reference mesh.
func TestScrapeConfig(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	runTool(t, "prometheus", promtool, "check", "config", "prometheus.yml")

	var mesh meshSites
	readYAML(t, filepath.Join(repoRoot, "configs/example-mesh.yaml"), &mesh)
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "prometheus/prometheus.yml", &cfg)
	got := map[string]string{}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "probed" {
			continue
		}
		for _, s := range sc.StaticConfigs {
			if _, bad := s.Labels["site"]; bad {
				t.Errorf("target label site would clash with the AWS metrics' site label: use agent_site")
			}
			for _, tg := range s.Targets {
				got[s.Labels["agent_site"]] = tg
			}
		}
	}
	for _, s := range mesh.Sites {
		if want := s.Agent + ":9447"; got[s.Name] != want {
			t.Errorf("site %s: scrape target %q, want %q", s.Name, got[s.Name], want)
		}
	}
}
