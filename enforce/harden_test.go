package enforce

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/store"
)

// TestGuardFromThePlanAlone: staged enforcement, either way, is checked
// like enforce mode, and a plan read back from JSON (a stored generation)
// gets the same answer as the one built.
func TestGuardFromThePlanAlone(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	some := []store.Flow{pflow(1, ProtoTCP, "192.0.2.1", 443, 1, tp)}
	cases := []struct {
		name  string
		flows []store.Flow
		opts  Options
		want  string // "" passes
	}{
		{"staged enforce-users, empty", nil, Options{Mode: ModeEnforce, EnforceUIDs: []uint32{0}, DNSServers: dns}, "no flows"},
		{"staged audit-users, empty", nil, Options{Mode: ModeEnforce, AuditUIDs: []uint32{0}, DNSServers: dns}, "no flows"},
		{"staged enforce-users, no dns", some, Options{Mode: ModeEnforce, EnforceUIDs: []uint32{0}}, "cut off DNS"},
		{"staged audit-users, local resolver", some, Options{Mode: ModeEnforce, AuditUIDs: []uint32{0},
			DNSServers: []netip.Addr{netip.MustParseAddr("127.0.0.53")}}, "local resolver"},
		{"staged, fine", some, Options{Mode: ModeEnforce, EnforceUIDs: []uint32{0}, DNSServers: dns}, ""},
		{"audit, empty", nil, Options{Mode: ModeAudit}, ""},
		{"enforce, dns in a multi-server rule", some, Options{Mode: ModeEnforce,
			DNSServers: []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("10.0.0.53")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Now = tp
			built := Build(c.flows, c.opts)
			data, err := json.Marshal(built)
			if err != nil {
				t.Fatal(err)
			}
			var stored Plan
			if err := json.Unmarshal(data, &stored); err != nil {
				t.Fatal(err)
			}
			for what, p := range map[string]*Plan{"built": built, "stored": &stored} {
				err := Guard(p, nil)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%s: refused: %v", what, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrUnsafe)):
					t.Errorf("%s: err = %v, want ErrUnsafe mentioning %q", what, err, c.want)
				}
			}
		})
	}
	if got := Build(nil, Options{Now: tp, DNSServers: []netip.Addr{netip.MustParseAddr("fd00::53"), netip.MustParseAddr("10.0.0.53")}}).DNSServers(); len(got) != 2 {
		t.Errorf("DNS servers of the plan: %v", got)
	}
}

// TestCheckExport: what "generate --from" refuses, and what it leaves out.
func TestCheckExport(t *testing.T) {
	for name, export := range hostileExports {
		var e store.Export
		if err := json.Unmarshal([]byte(export), &e); err != nil {
			t.Fatal(err)
		}
		warnings, err := CheckExport(&e)
		if name == "names" {
			// A user name is refused; once fixed, a hostname that is not a
			// DNS name is only left out, with a warning.
			if err == nil || !strings.Contains(err.Error(), "not a user name") {
				t.Errorf("%s: err = %v", name, err)
			}
			e.Users = map[uint32]string{0: "root", 1: "machine$", 2: "www-data"}
			warnings, err = CheckExport(&e)
			if err != nil || len(warnings) != 1 || !slices.Equal(e.Flows[0].Hostnames, []string{"ok.example"}) {
				t.Errorf("%s: %v %q %v", name, err, warnings, e.Flows[0].Hostnames)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted (warnings %q)", name, warnings)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: the error holds a newline: %q", name, err)
		}
	}
	e := store.Export{Host: "web-1.example", Flows: []store.Flow{{FlowKey: store.FlowKey{Proto: ProtoTCP, IP: netip.MustParseAddr("::ffff:192.0.2.1"), Port: 1}}}}
	if _, err := CheckExport(&e); err != nil || !e.Flows[0].IP.Is4() {
		t.Errorf("a mapped address: %v %v", err, e.Flows[0].IP)
	}
	e.Flows[0].Proto = 0
	if _, err := CheckExport(&e); err == nil {
		t.Error("a flow without a protocol was accepted")
	}
}

// TestConfigStringsAreChecked: reasons, name lists and addresses of the
// configuration that would reach the script are refused with their key.
func TestConfigStringsAreChecked(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{Table: "egress", Mode: "audit", ResolvConf: filepath.Join(t.TempDir(), "none"), FollowMode: FollowIP}
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
		{func(c *config.Config) { c.FollowMode = FollowBoth; c.FollowIPOnly = []string{"a\"b.example"} }, "follow_ip_only"},
	}
	for _, c := range cases {
		cfg := base()
		c.edit(cfg)
		if _, err := OptionsFromConfig(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want one naming %s", err, c.want)
		}
	}
	cfg := base()
	cfg.AlwaysAllow = []config.AllowConfig{{Proto: "tcp", Port: 22, Reason: "ansible pushes (deploy's key)"}}
	if _, err := OptionsFromConfig(cfg); err != nil {
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
	o, err := OptionsFromConfig(&config.Config{Table: "egress", Mode: "audit", Netns: "blue", FollowMode: FollowIP})
	if err != nil {
		t.Fatal(err)
	}
	p := Build(nil, o)
	want := []netip.Addr{netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("fe80::1")}
	if o.ResolvConf != own || !slices.Equal(p.DNSServers(), want) || p.ResolvConf != own {
		t.Errorf("options %s %v, plan %s %v", o.ResolvConf, o.DNSServers, p.ResolvConf, p.DNSServers())
	}
	if !strings.Contains(p.String(), "# DNS servers from "+own) {
		t.Errorf("the script does not say where the DNS servers came from:\n%s", p.String())
	}
}

// TestReconcileListsDeniedApart: a destination only the monitor saw
// denied is listed apart and joins the next baseline only when included.
func TestReconcileListsDeniedApart(t *testing.T) {
	approved := rflow(1, "192.0.2.1", 443, 5, tp, tp, 1)
	knock := store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 1, Proto: ProtoTCP, IP: netip.MustParseAddr("198.51.100.9"), Port: 8443},
		Hits: 1, FirstSeen: tp, LastSeen: tp}
	p := Reconcile([]store.Flow{approved}, []store.Observation{knock}, nil, 1, ReconcileOptions{MinHits: 1, Now: tp})
	if len(p.Additions) != 0 || len(p.Denied) != 1 || !p.Empty() || len(p.Next()) != 1 {
		t.Errorf("without --include-denied: additions %v, denied %v, next %v", p.Additions, p.Denied, p.Next())
	}
	var b strings.Builder
	_ = p.Write(&b)
	if !strings.Contains(b.String(), "? tcp 198.51.100.9:8443") || !strings.Contains(b.String(), "--include-denied") {
		t.Errorf("proposal text:\n%s", b.String())
	}
	p = Reconcile([]store.Flow{approved}, []store.Observation{knock}, nil, 1, ReconcileOptions{MinHits: 1, Now: tp, IncludeDenied: true})
	if len(p.Adding()) != 1 || p.Empty() || len(p.Next()) != 2 {
		t.Errorf("with --include-denied: adding %v, next %v", p.Adding(), p.Next())
	}
}

// TestTextEscapesEveryString: a plan whose every string is hostile renders
// to our table alone, and says it in quotes and comment lines that hold.
func TestTextEscapesEveryString(t *testing.T) {
	evil := "x\"\n}\nadd table inet injected\n#\\"
	zoned := netip.MustParseAddr("fe80::53%eth0")
	flows := []store.Flow{pflow(1, ProtoTCP, "192.0.2.1", 443, 2, tp, evil), pflow(1, ProtoICMP, "192.0.2.2", 0, 2, tp)}
	flows[1].IP = netip.MustParseAddr("fe80::9%" + evil)
	p := Build(flows, Options{Now: tp, Mode: ModeEnforce, Source: evil, ResolvConf: evil,
		DNSServers:  []netip.Addr{zoned, netip.MustParseAddr("fe80::54%" + evil)},
		AlwaysAllow: []Allow{{Proto: ProtoTCP, Port: 22, Reason: evil}},
		Follow:      &FollowOptions{Mode: FollowBoth, Names: []NameRule{{Name: evil, Proto: ProtoTCP, Port: 1}}}})
	text := p.String()
	if err := checkScript(text, "egress"); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !strings.Contains(text, "ip6 daddr { fe80::53, fe80::54 } udp dport 53") {
		t.Errorf("zones were not dropped from the DNS rule:\n%s", text)
	}
	p.Table = "egress\nadd"
	if err := p.Text(&strings.Builder{}); err == nil {
		t.Error("a table name that is not an identifier rendered")
	}
	p.Table = "egress"
	p.Rules[0].Text = "accept; add table inet x"
	if err := p.Text(&strings.Builder{}); err == nil {
		t.Error("a stored rule with a ';' rendered")
	}
}
