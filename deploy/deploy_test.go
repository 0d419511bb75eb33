// Package deploy holds the systemd units, the example configuration and an
// Ansible example; its tests check them.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/egresskit/egress/config"
)

// TestUnitsVerify: systemd-analyze verify accepts every unit, with the
// binaries the repository builds in place of /usr/local/bin.
func TestUnitsVerify(t *testing.T) {
	units, err := filepath.Glob("systemd/*")
	if err != nil || len(units) != 8 {
		t.Fatalf("units: %v %v", units, err)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing (apt-get install systemd, or make deps); CI=true, so this is a failure")
		}
		t.Log("systemd-analyze is missing: linting only")
		lintUnits(t, units)
		return
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, cmd := range []string{"egress-learn", "egress-enforce"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, cmd), "../cmd/"+cmd).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", cmd, err, out)
		}
	}
	var copies []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "/usr/local/bin/", bin+"/")
		c := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(c, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	lintUnits(t, copies)
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, copies...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// lintUnits checks what systemd-analyze would: sections, the keys every
// unit needs, and that services run our binaries with our config.
func lintUnits(t *testing.T, units []string) {
	t.Helper()
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		sections := map[string]map[string]string{}
		cur := ""
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
			case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
				cur = strings.Trim(line, "[]")
				sections[cur] = map[string]string{}
			case cur == "" || !strings.Contains(line, "="):
				t.Errorf("%s:%d: not a key=value in a section: %q", u, i+1, line)
			default:
				k, v, _ := strings.Cut(line, "=")
				sections[cur][k] = v
			}
		}
		if sections["Unit"]["Description"] == "" {
			t.Errorf("%s: no Description", u)
		}
		switch filepath.Ext(u) {
		case ".service":
			exec := sections["Service"]["ExecStart"]
			if !strings.Contains(exec, "egress-") || !strings.Contains(exec, "--config /etc/egress/config.yaml") {
				t.Errorf("%s: ExecStart %q", u, exec)
			}
			for _, k := range []string{"NoNewPrivileges", "ProtectSystem", "CapabilityBoundingSet"} {
				if sections["Service"][k] == "" {
					t.Errorf("%s: no %s hardening", u, k)
				}
			}
		case ".timer":
			if sections["Timer"]["OnCalendar"] == "" || sections["Install"]["WantedBy"] != "timers.target" {
				t.Errorf("%s: timer %v", u, sections)
			}
		}
	}
}

// TestExampleConfig: the example has every key, and loads.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, config.Keys()) {
		t.Errorf("example keys %v\nknown keys   %v", keys, config.Keys())
	}
	c, err := config.NewLoader().Load("config.example.yaml", pflag.NewFlagSet("x", pflag.ContinueOnError))
	if err != nil {
		t.Fatalf("the example does not load: %v", err)
	}
	if c.DB != "/var/lib/egress/baseline.db" || c.Mode != "audit" {
		t.Errorf("example: %+v", c)
	}
}
