package store

import (
	"net/netip"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// epochKeys are flows of uid 1000 to 192.0.2.1, one per port.
func epochKeys(ports ...uint16) []FlowKey {
	var keys []FlowKey
	for _, p := range ports {
		keys = append(keys, FlowKey{UID: 1000, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: p})
	}
	return keys
}

// approveBy approves a flow not approved yet by generation n.
func approveBy(n uint64) func(f *Flow) {
	return func(f *Flow) {
		if f.Approved == 0 {
			f.Approved = n
		}
	}
}

// recordWith adds a generation and records it applied with approvals a
// (approvals: given n, a's), as an apply does.
func recordWith(t *testing.T, s *Store, approvals func(n uint64) *Approvals) Generation {
	t.Helper()
	g, err := s.AddGeneration(Generation{Table: "egress", Mode: "enforce", State: GenApplying}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err = s.UpdateGenerationPlanApproving(g.N, []byte("plan"), func(g *Generation) error {
		g.State = GenApplied
		return nil
	}, approvals(g.N))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// approvedByPort are the store's flows by port, with the generation that
// approved each (0: not approved).
func approvedByPort(t *testing.T, s *Store) map[uint16]uint64 {
	t.Helper()
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16]uint64{}
	for _, f := range flows {
		out[f.Port] = f.Approved
	}
	return out
}

// planApprovals are the approvals of a plan of flows to ports.
func planApprovals(n uint64, ports ...uint16) *Approvals {
	return NewApprovals(epochKeys(ports...), approveBy(n)).OfPlan()
}

// after are the approvals of the plan of flows to ports, made from the
// plan of generation base by adding the flows to added; made counts the
// times the whole plan's approvals were made.
func after(base, n uint64, made *int, added []uint16, ports ...uint16) *Approvals {
	return NewApprovalsAfter(base, epochKeys(added...), approveBy(n), func() *Approvals {
		*made++
		return planApprovals(n, ports...)
	})
}

// TestApprovalsAfterLookUpOnlyAdded: a generation recorded with the
// approvals of its whole plan keeps the store's count of un-approving
// writes; the next plan's approvals, made from it, write only the flows it
// added (the whole plan's approvals are not even made), and every flow of
// the plan is approved.
func TestApprovalsAfterLookUpOnlyAdded(t *testing.T) {
	s := newStore(t)
	g1 := recordWith(t, s, func(n uint64) *Approvals { return planApprovals(n, 443, 22) })
	if g1.ApprovalsEpoch != 1 {
		t.Fatalf("generation recorded with its plan's approvals: approvals_epoch %d, want 1", g1.ApprovalsEpoch)
	}
	made := 0
	g2 := recordWith(t, s, func(n uint64) *Approvals { return after(g1.N, n, &made, []uint16{80}, 443, 22, 80) })
	if made != 0 {
		t.Errorf("the whole plan's approvals were made %d times, want none", made)
	}
	if got := approvedByPort(t, s); len(got) != 3 || got[443] != g1.N || got[22] != g1.N || got[80] != g2.N {
		t.Errorf("approved by port %v, want 443 and 22 by %d, 80 by %d", got, g1.N, g2.N)
	}
	if g2.ApprovalsEpoch != 1 {
		t.Errorf("generation 2: approvals_epoch %d, want 1", g2.ApprovalsEpoch)
	}
	// And a plan made from generation 2 (itself approved by the added
	// flows alone) knows its flows are all approved too.
	g3 := recordWith(t, s, func(n uint64) *Approvals { return after(g2.N, n, &made, []uint16{8080}, 443, 22, 80, 8080) })
	if got := approvedByPort(t, s); made != 0 || got[8080] != g3.N || got[80] != g2.N {
		t.Errorf("made %d, approved by port %v", made, got)
	}
}

// TestApprovalsAfterUnapprovedSince: once a flow of the base generation's
// plan was un-approved (a reconcile that retires it), the approvals of a
// plan made from it are the whole plan's, which approve that flow again;
// the count of un-approving writes went up. Without the count, the flow
// would stay un-approved while the plan applied lets it through.
func TestApprovalsAfterUnapprovedSince(t *testing.T) {
	s := newStore(t)
	g1 := recordWith(t, s, func(n uint64) *Approvals { return planApprovals(n, 443, 22) })
	if err := s.SetApproval(epochKeys(22), func(f *Flow) { f.Approved = 0 }); err != nil {
		t.Fatal(err)
	}
	made := 0
	g2 := recordWith(t, s, func(n uint64) *Approvals { return after(g1.N, n, &made, []uint16{80}, 443, 22, 80) })
	if made != 1 {
		t.Errorf("the whole plan's approvals were made %d times, want 1", made)
	}
	if got := approvedByPort(t, s); got[443] != g1.N || got[22] != g2.N || got[80] != g2.N {
		t.Errorf("approved by port %v, want 443 by %d, 22 and 80 by %d", got, g1.N, g2.N)
	}
	if g2.ApprovalsEpoch != 2 {
		t.Errorf("after one un-approving write: approvals_epoch %d, want 2", g2.ApprovalsEpoch)
	}
	// A write that changes no approval, or approves, counts nothing; nor
	// does a learner's flush of flows the store holds approved.
	if err := s.SetApproval(epochKeys(443, 9), approveBy(7)); err != nil {
		t.Fatal(err)
	}
	seen := Flow{FlowKey: epochKeys(443)[0], Hits: 5, FirstSeen: t0, LastSeen: t0}
	if err := s.Apply(&Batch{Flows: []Flow{seen}}); err != nil {
		t.Fatal(err)
	}
	if got := approvedByPort(t, s); got[443] != g1.N {
		t.Fatalf("a learner's flush changed the approval of a flow: %v", got)
	}
	g3 := recordWith(t, s, func(n uint64) *Approvals { return after(g2.N, n, &made, nil, 443, 22, 80) })
	if made != 1 || g3.ApprovalsEpoch != 2 {
		t.Errorf("after writes that un-approved nothing: made %d times, approvals_epoch %d, want 1 and 2", made, g3.ApprovalsEpoch)
	}
}

// TestApprovalsAfterUnknownBase: a base generation recorded without the
// approvals of its whole plan (none, approvals not of a plan, or a
// generation that does not exist) gives no such knowledge: the whole
// plan's approvals are written.
func TestApprovalsAfterUnknownBase(t *testing.T) {
	for name, approvals := range map[string]func(n uint64) *Approvals{
		"no approvals":           func(uint64) *Approvals { return nil },
		"approvals not of plans": func(n uint64) *Approvals { return NewApprovals(epochKeys(443, 22), approveBy(n)) },
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			g1 := recordWith(t, s, approvals)
			if g1.ApprovalsEpoch != 0 {
				t.Errorf("approvals_epoch %d, want 0", g1.ApprovalsEpoch)
			}
			if err := s.SetApproval(epochKeys(443, 22), func(f *Flow) { f.Approved = 0 }); err != nil {
				t.Fatal(err)
			}
			for _, base := range []uint64{g1.N, 99} {
				made := 0
				g := recordWith(t, s, func(n uint64) *Approvals { return after(base, n, &made, []uint16{80}, 443, 22, 80) })
				if got := approvedByPort(t, s); made != 1 || got[443] == 0 || got[22] == 0 || got[80] == 0 {
					t.Errorf("base %d: made %d times, approved by port %v (generation %d)", base, made, got, g.N)
				}
				if err := s.SetApproval(epochKeys(443, 22, 80), func(f *Flow) { f.Approved = 0 }); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestApprovalsAfterAbortedCountsNothing: a write rolled back changes
// neither the flows nor the count (the file stays as it was).
func TestApprovalsAfterAbortedCountsNothing(t *testing.T) {
	s := newStore(t)
	g1 := recordWith(t, s, func(n uint64) *Approvals { return planApprovals(n, 443, 22) })
	g2, err := s.AddGeneration(Generation{Table: "egress", Mode: "enforce", State: GenApplying}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := s.BeginApprovingWrite(func() *Approvals {
		return NewApprovals(epochKeys(443), func(f *Flow) { f.Approved = 0 })
	})
	<-w.Written()
	w.Abort()
	made := 0
	g3 := recordWith(t, s, func(n uint64) *Approvals { return after(g1.N, n, &made, []uint16{80}, 443, 22, 80) })
	if got := approvedByPort(t, s); made != 0 || got[443] != g1.N || got[80] != g3.N || g3.ApprovalsEpoch != 1 {
		t.Errorf("after an aborted un-approving write (generation %d): made %d, approved by port %v, approvals_epoch %d", g2.N, made, got, g3.ApprovalsEpoch)
	}
}

// TestMigrationToVersion8: a version 7 file opened for writing becomes
// version 8 with a count of un-approving writes of 1; its generations, from
// before the count, say nothing of their flows (the whole plan's approvals
// are written after them); a binary that knows only version 7 (and does
// not count what it un-approves) then refuses the file.
func TestMigrationToVersion8(t *testing.T) {
	path, _ := oldFile(t, 7, func(s *Store) {
		recordWith(t, s, func(n uint64) *Approvals { return planApprovals(n, 443, 22) })
		if err := s.SetApproval(epochKeys(22), func(f *Flow) { f.Approved = 0 }); err != nil {
			t.Fatal(err)
		}
	})
	withSchema(t, 8)
	s := migrated(t, path, 8)
	var epoch uint64
	if err := s.view(func(tx *bolt.Tx) error { epoch = approvalsEpoch(tx); return nil }); err != nil || epoch != 1 {
		t.Errorf("approvals_epoch after the migration: %d, %v; want 1", epoch, err)
	}
	made := 0
	recordWith(t, s, func(n uint64) *Approvals { return after(1, n, &made, []uint16{80}, 443, 22, 80) })
	if got := approvedByPort(t, s); made != 1 || got[22] == 0 {
		t.Errorf("after a generation of version 7: made %d times, approved by port %v", made, got)
	}
	withSchema(t, 7)
	if _, err := Create(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Errorf("a version 7 binary opens the migrated file: %v", err)
	}
}
