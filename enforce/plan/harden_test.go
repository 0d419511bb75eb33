package plan_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// TestGuardFromThePlanAlone: staged enforcement, either way, is checked
// like enforce mode, and a plan read back from JSON (a stored generation)
// gets the same answer as the one built.
func TestGuardFromThePlanAlone(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	some := []store.Flow{pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 1, tp)}
	cases := []struct {
		name  string
		flows []store.Flow
		opts  plan.Options
		want  string // "" passes
	}{
		{"staged enforce-users, empty", nil, plan.Options{Mode: plan.ModeEnforce, EnforceUIDs: []uint32{0}, DNSServers: dns}, "no flows"},
		{"staged audit-users, empty", nil, plan.Options{Mode: plan.ModeEnforce, AuditUIDs: []uint32{0}, DNSServers: dns}, "no flows"},
		{"staged enforce-users, no dns", some, plan.Options{Mode: plan.ModeEnforce, EnforceUIDs: []uint32{0}}, "cut off DNS"},
		{"staged audit-users, local resolver", some, plan.Options{Mode: plan.ModeEnforce, AuditUIDs: []uint32{0},
			DNSServers: []netip.Addr{netip.MustParseAddr("127.0.0.53")}}, "local resolver"},
		{"staged, fine", some, plan.Options{Mode: plan.ModeEnforce, EnforceUIDs: []uint32{0}, DNSServers: dns}, ""},
		{"audit, empty", nil, plan.Options{Mode: plan.ModeAudit}, ""},
		{"enforce, dns in a multi-server rule", some, plan.Options{Mode: plan.ModeEnforce,
			DNSServers: []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("10.0.0.53")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Now = tp
			built := plan.Build(c.flows, c.opts)
			data, err := json.Marshal(built)
			if err != nil {
				t.Fatal(err)
			}
			var stored plan.Plan
			if err := json.Unmarshal(data, &stored); err != nil {
				t.Fatal(err)
			}
			for what, p := range map[string]*plan.Plan{"built": built, "stored": &stored} {
				err := plan.Guard(p, nil)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%s: refused: %v", what, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, plan.ErrUnsafe)):
					t.Errorf("%s: err = %v, want ErrUnsafe mentioning %q", what, err, c.want)
				}
			}
		})
	}
	if got := plan.Build(nil, plan.Options{Now: tp, DNSServers: []netip.Addr{netip.MustParseAddr("fd00::53"), netip.MustParseAddr("10.0.0.53")}}).DNSServers(); len(got) != 2 {
		t.Errorf("DNS servers of the plan: %v", got)
	}
}

// TestTextEscapesEveryString: a plan whose every string is hostile renders
// to our table alone, and says it in quotes and comment lines that hold.
func TestTextEscapesEveryString(t *testing.T) {
	evil := "x\"\n}\nadd table inet injected\n#\\"
	zoned := netip.MustParseAddr("fe80::53%eth0")
	flows := []store.Flow{pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 2, tp, evil), pflow(1, plan.ProtoICMP, "192.0.2.2", 0, 2, tp)}
	flows[1].IP = netip.MustParseAddr("fe80::9%" + evil)
	p := plan.Build(flows, plan.Options{Now: tp, Mode: plan.ModeEnforce, Source: evil, ResolvConf: evil,
		DNSServers:  []netip.Addr{zoned, netip.MustParseAddr("fe80::54%" + evil)},
		AlwaysAllow: []plan.Allow{{Proto: plan.ProtoTCP, Port: 22, Reason: evil}},
		Follow:      &plan.FollowOptions{Mode: plan.FollowBoth, Names: []plan.NameRule{{Name: evil, Proto: plan.ProtoTCP, Port: 1}}}})
	text := p.String()
	if err := plantest.CheckScript(text, "egress"); err != nil {
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
