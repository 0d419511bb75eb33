//go:build linux

package rollout

import (
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestPlansStoredAsPatches: applies that go as deltas store their plans as
// patches of the plan before; every plan reads back exactly (from the
// store and from the files beside it), pruning keeps the plans a kept one
// patches, a rollback to a patched generation puts its table back, and a
// chain holds at most maxPatchDepth plans (a whole one, then patches).
func TestPlansStoredAsPatches(t *testing.T) {
	r := newRig(t)
	plans := []*plan.Plan{planOf(plan.ModeAudit, 443)}
	for i := range maxPatchDepth + 2 {
		plans = append(plans, planOf(plan.ModeAudit, 443, uint16(1000+i)))
	}
	for _, p := range plans {
		r.apply(p, Options{})
	}
	if r.k.Deltas() != len(plans)-1 {
		t.Fatalf("%d applies went as deltas, want %d", r.k.Deltas(), len(plans)-1)
	}
	depth := 0
	for i, p := range plans {
		n := uint64(i + 1)
		g := r.gen(n)
		switch {
		case i == 0 || depth == maxPatchDepth-1:
			depth = 0
			if g.PlanBase != 0 {
				t.Errorf("generation %d: a patch of %d, want a whole plan", n, g.PlanBase)
			}
		default:
			depth++
			if g.PlanBase != n-1 {
				t.Errorf("generation %d: patches %d, want %d", n, g.PlanBase, n-1)
			}
		}
		if got, err := LoadPlan(r.st, n); err != nil || got.String() != p.String() {
			t.Errorf("generation %d's plan read back: %v\n%v\nwant\n%v", n, err, got, p)
		}
	}
	last := uint64(len(plans))
	dir := AppliedDir(r.db, targetKey(r.k.Target()), plan.DefaultTable)
	if got, err := readAppliedPlan(dir, last); err != nil || got.String() != plans[last-1].String() {
		t.Errorf("the newest plan from the files beside the store: %v", err)
	}

	// Roll back to a generation stored as a patch.
	to := uint64(3)
	if r.gen(to).PlanBase == 0 {
		t.Fatalf("generation %d is not a patch", to)
	}
	if _, err := Rollback(r.st, r.k, plan.DefaultTable, RollbackOptions{To: to, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if !r.holds(plans[to-1]) {
		t.Errorf("after the rollback to %d the kernel holds\n%s", to, r.k.Dump())
	}

	// Prune to one generation: the plans kept stay readable (the plans
	// they patch are kept too).
	res, err := r.st.Prune(store.PruneOptions{KeepGenerations: 1, KeepPlans: PlansToKeep})
	if err != nil {
		t.Fatal(err)
	}
	gens, _ := r.st.Generations()
	readable := 0
	for _, g := range gens {
		if data, err := r.st.GenerationPlan(g.N); err == nil && data != nil {
			readable++
			if _, err := LoadPlan(r.st, g.N); err != nil {
				t.Errorf("generation %d's plan after a prune: %v", g.N, err)
			}
		}
	}
	if readable == 0 || readable == len(gens) {
		t.Errorf("%d of %d plans kept after the prune (%+v)", readable, len(gens), res)
	}
}
