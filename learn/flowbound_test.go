package learn

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestFlowsAreBounded: a local user makes a new flow with every connect to
// another port, and each stays in the store and in the learner. A user's
// new flows past its bound, and anyone's past the bound in all, are not
// recorded: their attempts are counted. A known flow (of the store, or
// recorded before) still counts, and another user keeps its room until
// the bound in all.
func TestFlowsAreBounded(t *testing.T) {
	known := []store.FlowKey{{UID: 1000, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 1}}
	a := newAggregator(Filter{}, nil, known)
	a.maxKnown, a.maxUser = 15, 10
	t0 := time.Unix(1000, 0)
	for port := range uint16(30) {
		a.add(attempt(1000, "192.0.2.1", 1+port, 2, t0, "flood"))
	}
	a.addPresented(1000, 6, netip.MustParseAddr("192.0.2.1"), 999, "over.example", t0)
	a.add(attempt(1000, "192.0.2.1", 1, 5, t0, "flood")) // known: still counted
	for port := range uint16(20) {
		a.add(attempt(2000, "198.51.100.1", 1+port, 1, t0, "victim"))
	}
	s := a.status(t0)
	// 1000: its known flow and 9 new ones; 20 new over its bound (2 hits
	// each). 2000: 5 until the bound in all, 15 over it.
	if s.Flows != 15 {
		t.Fatalf("%d flows known, want the bound 15", s.Flows)
	}
	if want := uint64(20*2 + 15); s.FlowsUnrecorded != want || s.FlowsUnrecordedUID != 2000 {
		t.Fatalf("%d attempts unrecorded (last uid %d), want %d (2000)", s.FlowsUnrecorded, s.FlowsUnrecordedUID, want)
	}
	tk := a.take()
	by := map[uint32]int{}
	hits := map[string]uint64{}
	for _, f := range tk.chunk(0, len(tk.flows)) {
		by[f.UID]++
		hits[fmt.Sprintf("%d %s:%d", f.UID, f.IP, f.Port)] = f.Hits
		if len(f.Presented) > 0 {
			t.Fatalf("flow %v over the bound kept its presented name", f.FlowKey)
		}
	}
	if by[1000] != 10 || by[2000] != 5 || hits["1000 192.0.2.1:1"] != 7 {
		t.Fatalf("flows taken by user %v (the known one's hits %d), want 10 of 1000 and 5 of 2000 (7)", by, hits["1000 192.0.2.1:1"])
	}
	// The next window: known flows still count, new ones are still over.
	a.add(attempt(2000, "198.51.100.1", 1, 1, t0, "victim"))
	a.add(attempt(3000, "203.0.113.1", 443, 1, t0, "other"))
	if tk := a.take(); len(tk.flows) != 1 || a.status(t0).FlowsUnrecorded != 20*2+15+1 {
		t.Fatalf("the next window took %d flows, %d unrecorded; want the known one, one more unrecorded", len(tk.flows), a.status(t0).FlowsUnrecorded)
	}
}

// TestRootHasNoShare: root, trusted with the baseline already, is held
// to the bound in all only.
func TestRootHasNoShare(t *testing.T) {
	a := newAggregator(Filter{}, nil, nil)
	a.maxKnown, a.maxUser = 15, 10
	t0 := time.Unix(1000, 0)
	for port := range uint16(20) {
		a.add(attempt(0, "192.0.2.1", 1+port, 1, t0, "root"))
	}
	if s := a.status(t0); s.Flows != 15 || s.FlowsUnrecorded != 5 {
		t.Fatalf("root: %d flows, %d attempts unrecorded; want 15 and 5", s.Flows, s.FlowsUnrecorded)
	}
}
