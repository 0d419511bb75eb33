package baseline

import (
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// ApprovePlan marks the flows of an applied plan approved by generation n
// (those not approved before): later learning records new flows as
// candidates for a reviewed reconcile instead.
func ApprovePlan(st *store.Store, p *plan.Plan, n uint64, now time.Time) error {
	return st.WriteApprovals(PlanApprovals(p, n, now))
}

// PlanApprovals are the approvals ApprovePlan writes, made ready for a
// write that records them with the generation (rollout.Options.Approve).
func PlanApprovals(p *plan.Plan, n uint64, now time.Time) *store.Approvals {
	runs := make([]store.KeyRun, 0, len(p.Sets))
	for _, s := range p.Sets {
		els := s.Elements
		runs = append(runs, store.KeyRun{N: len(els), Key: func(i int) store.FlowKey { return flowKeyOf(&els[i]) }})
	}
	return store.NewApprovalsOfRuns(runs, approveBy(n, now)).OfPlan()
}

// PlanApprovalsAfter are PlanApprovals of p, applied as delta d from the
// plan of generation base (rollout.Options.ApproveAfter): the flows d
// adds, written alone when the store knows every flow of base's plan is
// still approved, else the whole plan's (store.NewApprovalsAfter).
func PlanApprovalsAfter(p *plan.Plan, d *plan.Delta, base, n uint64, now time.Time) *store.Approvals {
	var added []store.FlowKey
	for _, els := range d.Add {
		for i := range els {
			added = append(added, flowKeyOf(&els[i]))
		}
	}
	return store.NewApprovalsAfter(base, added, approveBy(n, now), func() *store.Approvals { return PlanApprovals(p, n, now) })
}

// flowKeyOf is the flow a plan's element lets through.
func flowKeyOf(e *plan.Element) store.FlowKey {
	return store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port}
}

// approveBy approves a flow not approved yet by generation n.
func approveBy(n uint64, now time.Time) func(f *store.Flow) {
	at := now.UTC()
	return func(f *store.Flow) {
		if f.Approved == 0 {
			f.Approved, f.ApprovedAt, f.ApprovedNames = n, at, f.Hostnames
			f.Retired = time.Time{}
		}
	}
}

// Approve records an applied proposal as generation n: what it added is
// approved (a destination only the monitor saw is added to the store with
// what the monitor knew of it), what it removed is retired.
func (p *Proposal) Approve(st *store.Store, n uint64, now time.Time) error {
	added := map[store.FlowKey]Change{}
	for _, c := range p.Adding() {
		added[c.key] = c
	}
	if err := st.SetApproval(Keys(p.Adding()), func(f *store.Flow) {
		if f.Hits == 0 { // a destination only the monitor saw
			c := added[f.FlowKey]
			f.Hits, f.FirstSeen, f.LastSeen, f.Hostnames = c.Hits, c.FirstSeen, c.LastSeen, c.Hostnames
		}
		f.Approved, f.ApprovedAt, f.ApprovedNames, f.Retired = n, now.UTC(), f.Hostnames, time.Time{}
	}); err != nil {
		return err
	}
	return st.SetApproval(Keys(p.Removals), func(f *store.Flow) {
		f.Approved, f.ApprovedAt, f.ApprovedNames, f.Retired = 0, time.Time{}, nil, now.UTC()
	})
}
