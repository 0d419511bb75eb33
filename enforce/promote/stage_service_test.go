package promote

import (
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// TestNextRefusesServiceStaging: promotion is by user; restaging a table
// staged by service by user would audit what --audit-services enforced
// (everything but the audited services), so Next refuses it.
func TestNextRefusesServiceStaging(t *testing.T) {
	f := plantest.Flow(65534, plan.ProtoTCP, "192.0.2.1", 443, 1, plantest.T0)
	f.Cgroups = []string{"/system.slice/a.service"}
	p := plan.Build([]store.Flow{f}, plan.Options{Mode: plan.ModeEnforce, Match: plan.MatchService, AuditServices: []string{"system.slice/a.service"}})
	r := &Report{Next: &Staging{Mode: plan.ModeStaged, EnforceUIDs: []uint32{65534}}}
	if _, err := Next(r, p); err == nil || !strings.Contains(err.Error(), "stages by service") {
		t.Errorf("Next on a table staged by service: %v", err)
	}
}
