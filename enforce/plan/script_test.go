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
		strings.Replace(good, `comment "learned flows: 1"`, `comment "learned" flows: 1"`, 1),
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
