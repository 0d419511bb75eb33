package plan_test

import (
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
)

// TestRestage: restaging any golden plan to any staging gives the plan
// Build makes with that staging (same JSON, same nft text), and leaves
// the plan it started from as it was.
func TestRestage(t *testing.T) {
	for _, from := range plantest.GoldenCases {
		for _, to := range plantest.GoldenCases {
			if (from.Name == "follow") != (to.Name == "follow") {
				continue // another allow-list
			}
			p := from.Plan()
			before := plantest.JSON(t, p)
			got, err := plan.Restage(p, to.Mode, to.Enforce, to.Audit)
			if err != nil {
				t.Fatalf("%s -> %s: %v", from.Name, to.Name, err)
			}
			want := to.Plan()
			if plantest.JSON(t, got) != plantest.JSON(t, want) || got.String() != want.String() {
				t.Errorf("%s restaged as %s:\n%s\nwant:\n%s", from.Name, to.Name, got.String(), want.String())
			}
			if plantest.JSON(t, p) != before {
				t.Errorf("%s -> %s changed the plan it started from", from.Name, to.Name)
			}
		}
	}
}

// TestRestageRefuses: both user lists at once, users without enforce
// mode, a mode that is not one.
func TestRestageRefuses(t *testing.T) {
	p := plantest.GoldenCases[0].Plan()
	for _, c := range []struct {
		mode           plan.Mode
		enforce, audit []uint32
	}{
		{plan.ModeEnforce, []uint32{1}, []uint32{2}},
		{plan.ModeAudit, []uint32{1}, nil},
		{plan.ModeStaged, []uint32{1}, nil},
	} {
		if _, err := plan.Restage(p, c.mode, c.enforce, c.audit); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
