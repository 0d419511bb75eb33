//go:build linux

package rollout

import (
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// planKeys are the flows p lets through.
func planKeys(p *plan.Plan) []store.FlowKey {
	var keys []store.FlowKey
	for _, s := range p.Sets {
		for _, e := range s.Elements {
			keys = append(keys, store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port})
		}
	}
	return keys
}

// approvingAfter is approving(p) of a plan's approvals (OfPlan), with
// ApproveAfter: the flows a delta adds, or the whole plan's; whole counts
// the times the whole plan's approvals were made for a delta.
func approvingAfter(p *plan.Plan, whole *int) Options {
	fn := func(n uint64) func(f *store.Flow) {
		return func(f *store.Flow) {
			if f.Approved == 0 {
				f.Approved, f.ApprovedAt = n, plantest.T0
			}
		}
	}
	return Options{
		Approve: func(n uint64) *store.Approvals { return store.NewApprovals(planKeys(p), fn(n)).OfPlan() },
		ApproveAfter: func(n, base uint64, d *plan.Delta) *store.Approvals {
			var added []store.FlowKey
			for _, els := range d.Add {
				for _, e := range els {
					added = append(added, store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port})
				}
			}
			return store.NewApprovalsAfter(base, added, fn(n), func() *store.Approvals {
				*whole++
				return store.NewApprovals(planKeys(p), fn(n)).OfPlan()
			})
		},
	}
}

// TestDeltaApprovesWhatItAdds: an apply that goes as a delta approves the
// flows it adds, and looks up no other (the whole plan's approvals are not
// made): the store knows the base's flows are all approved. After a flow
// of the base was un-approved (a reconcile that retires it), the next
// delta approves its whole plan again, that flow with it.
func TestDeltaApprovesWhatItAdds(t *testing.T) {
	r := newRig(t)
	whole := 0
	p1 := planOf(plan.ModeEnforce, 443, 22)
	g1 := r.apply(p1, approvingAfter(p1, &whole))
	p2 := planOf(plan.ModeEnforce, 443, 22, 80)
	g2 := r.apply(p2, approvingAfter(p2, &whole))
	if r.k.Deltas() != 1 {
		t.Fatalf("%d applies went as deltas, want 1", r.k.Deltas())
	}
	if got := r.approved(); whole != 0 || len(got) != 3 || got[443] != g1.N || got[22] != g1.N || got[80] != g2.N {
		t.Errorf("after the delta: whole plan's approvals made %d times, approved by port %v; want none, 443 and 22 by %d, 80 by %d", whole, got, g1.N, g2.N)
	}
	if g2.ApprovalsEpoch == 0 || g2.ApprovalsEpoch != g1.ApprovalsEpoch {
		t.Errorf("approvals_epoch of generations 1 and 2: %d, %d", g1.ApprovalsEpoch, g2.ApprovalsEpoch)
	}

	if err := r.st.SetApproval(planKeys(planOf(plan.ModeEnforce, 22)), func(f *store.Flow) { f.Approved = 0 }); err != nil {
		t.Fatal(err)
	}
	p3 := planOf(plan.ModeEnforce, 443, 22, 80, 8080)
	g3 := r.apply(p3, approvingAfter(p3, &whole))
	if r.k.Deltas() != 2 {
		t.Fatalf("%d applies went as deltas, want 2", r.k.Deltas())
	}
	if got := r.approved(); whole != 1 || got[22] != g3.N || got[8080] != g3.N || got[443] != g1.N || got[80] != g2.N {
		t.Errorf("after a flow was un-approved: whole plan's approvals made %d times, approved by port %v; want once, 22 and 8080 by %d", whole, got, g3.N)
	}
}
