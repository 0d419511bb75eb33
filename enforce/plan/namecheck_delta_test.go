package plan_test

import (
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestPatchCarriesNameChecks: turning the name check on changes no
// element's key or comment, only its names; a generation stored as a
// patch must still hold them (else the name check of the current
// generation would check nothing).
func TestPatchCarriesNameChecks(t *testing.T) {
	flows := []store.Flow{
		pflow(1000, plan.ProtoTCP, "192.0.2.10", 443, 3, tp, "name1.lab"),
		pflow(1000, plan.ProtoTCP, "192.0.2.11", 443, 3, tp),
		pflow(1000, plan.ProtoTCP, "192.0.2.12", 443, 3, tp),
		pflow(1000, plan.ProtoTCP, "192.0.2.13", 443, 3, tp),
		pflow(1000, plan.ProtoTCP, "2001:db8::1", 443, 3, tp),
	}
	off := deltaOptions(plan.ModeEnforce)
	on := off
	on.NameCheck = plan.NameCheckEnforce
	from := plan.Build(flows, off)
	to := plan.Build(flows, on)
	fromIdx := plan.IndexOf(from)
	d, err := plan.NewDelta(fromIdx, to)
	if err != nil {
		t.Fatal(err)
	}
	if d.Changed != 1 {
		t.Errorf("%d elements changed, want the one that gets names", d.Changed)
	}
	checkPatch(t, from, fromIdx, to, d)
	if len(to.NameChecks()) != 1 {
		t.Fatalf("name checks %+v", to.NameChecks())
	}
}
