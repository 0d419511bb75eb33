package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/egresskit/egress/store"
)

func load(t *testing.T, yaml string, env map[string]string, args ...string) (*Config, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	file := ""
	if yaml != "" {
		file = filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String("db", store.DefaultPath, "")
	fs.String("mode", "audit", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	l := NewLoader()
	l.Bind("db", "db")
	l.Bind("mode", "mode")
	return l.Load(file, fs)
}

func TestDefaults(t *testing.T) {
	if _, err := os.Stat(DefaultFile); err == nil {
		t.Skip(DefaultFile + " exists on this machine")
	}
	c, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB != store.DefaultPath || c.FlushInterval != 5*time.Second || !c.IgnoreLoopback || c.Mode != "audit" ||
		c.Table != "egress" || c.NFLOGGroup != 100 || c.ResolvConf != "" || c.MinHits != 1 || c.Since != 0 {
		t.Errorf("defaults: %+v", c)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	c, err := load(t, "db: /file.db\nmode: enforce\nflush_interval: 2s\n", map[string]string{"EGRESS_DB": "/env.db"})
	if err != nil {
		t.Fatal(err)
	}
	if c.DB != "/env.db" || c.Mode != "enforce" || c.FlushInterval != 2*time.Second {
		t.Errorf("env over file: %+v", c)
	}
	c, err = load(t, "db: /file.db\n", map[string]string{"EGRESS_DB": "/env.db"}, "--db", "/flag.db", "--mode", "audit")
	if err != nil {
		t.Fatal(err)
	}
	if c.DB != "/flag.db" || c.Mode != "audit" {
		t.Errorf("flag over env: %+v", c)
	}
}

func TestListsAndAllow(t *testing.T) {
	c, err := load(t, `
ignore_cidrs: [10.0.0.0/8, "::ffff:192.0.2.0/120", 198.51.100.7]
ignore_ports: [22, 53]
ignore_users: [root, "65534"]
always_allow:
  - {proto: tcp, dest: 10.0.0.0/8, port: 443, user: root, reason: x}
`, map[string]string{"EGRESS_DNS_SERVERS": "192.0.2.53,2001:db8::53"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")}
	for i, p := range want {
		if c.IgnorePrefixes[i] != p {
			t.Errorf("prefix %d = %v, want %v", i, c.IgnorePrefixes[i], p)
		}
	}
	if len(c.IgnorePortList) != 2 || c.IgnoreUIDs[0] != 0 || c.IgnoreUIDs[1] != 65534 {
		t.Errorf("ports %v uids %v", c.IgnorePortList, c.IgnoreUIDs)
	}
	if len(c.AlwaysAllow) != 1 || c.AlwaysAllow[0].Port != 443 || c.AlwaysAllow[0].User != "root" {
		t.Errorf("always_allow %+v", c.AlwaysAllow)
	}
	if len(c.DNSServers) != 2 {
		t.Errorf("dns_servers from the environment: %v", c.DNSServers)
	}
}

func TestInvalidSettingsNameTheKey(t *testing.T) {
	for yaml, want := range map[string]string{
		"flush_interval: 10\n":                        "flush_interval",
		"flush_interval: 10ms\n":                      "too short",
		"ignore_ports: [0]\n":                         "ignore_ports",
		"ignore_cidrs: [banana]\n":                    "banana",
		"mode: strict\n":                              "mode",
		"nflog_group: 70000\n":                        "nflog_group",
		"log_level: loud\n":                           "log_level",
		"dns_servers: [dns.example.com]\n":            "dns_servers",
		"since: a while\n":                            "since",
		"bogus: 1\n":                                  "bogus",
		"always_allow:\n  - {proto: tcp, dport: 1}\n": "dport",
		"min_hits: -1\n":                              "min_hits",
		"name_check: strict\n":                        "name_check",
	} {
		_, err := load(t, yaml, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to mention %q", yaml, err, want)
		}
	}
}
