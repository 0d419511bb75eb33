package plan_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// TestCheckScriptCatchesInjection: the checker itself sees an added table,
// a string that ends early and a second block.
func TestCheckScriptCatchesInjection(t *testing.T) {
	p := plan.Build([]store.Flow{pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 2, tp)}, plan.Options{Now: tp, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth}, EnforceUIDs: []uint32{1}, Mode: plan.ModeEnforce})
	good := p.String()
	if err := plantest.CheckScript(good, "egress"); err != nil {
		t.Fatalf("a plain script: %v\n%s", err, good)
	}
	for _, bad := range []string{
		strings.Replace(good, "# Mode", "add table inet x\n# Mode", 1),
		strings.Replace(good, `comment "learned flows"`, `comment "learned" flows"`, 1),
		good + "table inet egress {\n}\n",
		strings.Replace(good, "\tchain output {", "\tchain output {\n\t\tflush ruleset;", 1),
		strings.Replace(good, "}\n}\n", "}\n}\nadd table inet y\n", 1),
	} {
		if plantest.CheckScript(bad, "egress") == nil {
			t.Errorf("not caught:\n%s", bad)
		}
	}
	// Every golden case has the shape too.
	for _, c := range goldenCases {
		if err := plantest.CheckScript(goldenCasePlan(c.name, c.mode, c.enforce, c.audit).String(), "egress"); err != nil {
			t.Errorf("golden %s: %v", c.name, err)
		}
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
