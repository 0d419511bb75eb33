package store

import (
	"net/netip"
	"testing"
	"time"
)

// TestApproveNewLeavesApprovedFlows: ApproveNew approves the flows not
// approved yet (and adds those the store lacks), and leaves an approved
// flow as it is, telling it from its stored bytes.
func TestApproveNewLeavesApprovedFlows(t *testing.T) {
	s := newStore(t)
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	key := func(port uint16) FlowKey {
		return FlowKey{UID: 1000, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: port}
	}
	flows := []Flow{{FlowKey: key(1), Hits: 1, LastSeen: t0}, {FlowKey: key(2), Hits: 2, LastSeen: t0}}
	if err := s.Apply(&Batch{Flows: flows}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetApproval([]FlowKey{key(1)}, func(f *Flow) { f.Approved, f.ApprovedAt = 12, t0 }); err != nil {
		t.Fatal(err)
	}
	var seen []uint16
	err := s.ApproveNew([]FlowKey{key(2), key(1), key(3), key(2)}, func(f *Flow) {
		seen = append(seen, f.Port)
		f.Approved, f.ApprovedAt = 13, t0.Add(time.Hour)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != 2 || seen[1] != 3 {
		t.Errorf("ApproveNew showed ports %v, want 2 and 3 (1 is approved; a key twice once)", seen)
	}
	got, err := s.FlowsFor([]FlowKey{key(1), key(2), key(3)})
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]uint64{1: 12, 2: 13, 3: 13} {
		if f := got[key(port)]; f.Approved != want {
			t.Errorf("port %d: approved by %d, want %d", port, f.Approved, want)
		}
	}
	if got[key(2)].Hits != 2 || got[key(3)].Hits != 0 {
		t.Errorf("hits %d and %d, want 2 (kept) and 0 (added by the approval)", got[key(2)].Hits, got[key(3)].Hits)
	}
}
