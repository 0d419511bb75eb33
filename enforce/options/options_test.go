package options

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
)

// TestConfigStringsAreChecked: reasons, name lists and addresses of the
// configuration that would reach the script are refused with their key.
func TestConfigStringsAreChecked(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{Table: "egress", Mode: "audit", ResolvConf: filepath.Join(t.TempDir(), "none"), FollowMode: plan.FollowIP}
	}
	cases := []struct {
		edit func(*config.Config)
		want string
	}{
		{func(c *config.Config) {
			c.AlwaysAllow = []config.AllowConfig{{Proto: "tcp", Port: 22, Reason: "ssh\"\nadd table inet x"}}
		}, "always_allow #1: reason"},
		{func(c *config.Config) {
			c.AlwaysAllow = []config.AllowConfig{{Proto: "tcp", Reason: strings.Repeat("r", 65)}}
		}, "reason"},
		{func(c *config.Config) { c.DNSServers = []string{"fe80::1%eth0"} }, "dns_servers"},
		{func(c *config.Config) { c.NTPServers = []string{"fe80::1%x"} }, "ntp_servers"},
		{func(c *config.Config) { c.Table = "egress\nadd" }, "table"},
		{func(c *config.Config) { c.FollowMode = plan.FollowBoth; c.FollowIPOnly = []string{"a\"b.example"} }, "follow_ip_only"},
	}
	for _, c := range cases {
		cfg := base()
		c.edit(cfg)
		if _, err := FromConfig(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want one naming %s", err, c.want)
		}
	}
	cfg := base()
	cfg.AlwaysAllow = []config.AllowConfig{{Proto: "tcp", Port: 22, Reason: "ansible pushes (deploy's key)"}}
	if _, err := FromConfig(cfg); err != nil {
		t.Errorf("a plain reason: %v", err)
	}
}

// TestResolvConfFor: a namespace given by name reads its own resolv.conf
// when it has one; a configured file wins; a path reads the host's.
func TestResolvConfFor(t *testing.T) {
	netnsEtc = t.TempDir()
	t.Cleanup(func() { netnsEtc = "/etc/netns" })
	own := filepath.Join(netnsEtc, "blue", "resolv.conf")
	if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, []byte("nameserver 192.0.2.77\nnameserver fe80::1%eth0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ configured, netns, want string }{
		{"", "", HostResolvConf},
		{"", "blue", own},
		{"", "/run/netns/blue", own},
		{"", "red", HostResolvConf},
		{"", "/proc/1/ns/net", HostResolvConf},
		{"", "..", HostResolvConf},
		{"/x/resolv.conf", "blue", "/x/resolv.conf"},
	} {
		if got := ResolvConfFor(c.configured, c.netns); got != c.want {
			t.Errorf("ResolvConfFor(%q, %q) = %s, want %s", c.configured, c.netns, got, c.want)
		}
	}
	o, err := FromConfig(&config.Config{Table: "egress", Mode: "audit", Netns: "blue", FollowMode: plan.FollowIP})
	if err != nil {
		t.Fatal(err)
	}
	p := plan.Build(nil, o)
	want := []netip.Addr{netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("fe80::1")}
	if o.ResolvConf != own || !slices.Equal(p.DNSServers(), want) || p.ResolvConf != own {
		t.Errorf("options %s %v, plan %s %v", o.ResolvConf, o.DNSServers, p.ResolvConf, p.DNSServers())
	}
	if !strings.Contains(p.String(), "# DNS servers from "+own) {
		t.Errorf("the script does not say where the DNS servers came from:\n%s", p.String())
	}
}
