package main

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// approvedBy are the store's flows, each with the generation that
// approved it (0: not approved).
func approvedBy(t *testing.T, db string) map[store.FlowKey]uint64 {
	t.Helper()
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	flows, err := st.Flows()
	if err != nil {
		t.Fatal(err)
	}
	out := map[store.FlowKey]uint64{}
	for _, f := range flows {
		out[f.FlowKey] = f.Approved
	}
	return out
}

// TestApplyFromDeltaApprovals: an apply --from that goes as a delta
// approves the flows its export added (by its generation), and leaves the
// others approved by the generation that approved them; after a flow was
// un-approved in the store, the next delta approves it again (the store
// no longer knows the base's flows are all approved, so the whole plan's
// approvals are written).
func TestApplyFromDeltaApprovals(t *testing.T) {
	l := newRolloutLab(t)
	dir := t.TempDir()
	flows := memoFlowsFor(300)
	now := time.Now()
	added := store.Flow{FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: netip.MustParseAddr(lab.ServerIP4), Port: 8081}, Hits: 2, FirstSeen: now, LastSeen: now}
	third := store.Flow{FlowKey: store.FlowKey{UID: 1001, Proto: 6, IP: netip.MustParseAddr("192.0.2.77"), Port: 8443}, Hits: 2, FirstSeen: now, LastSeen: now}
	exports := [][]store.Flow{flows, append(slices.Clone(flows), added), append(slices.Clone(flows), added, third)}
	paths := make([]string, len(exports))
	for i, fl := range exports {
		paths[i] = filepath.Join(dir, "export"+string(rune('1'+i))+".json")
		memoExport(t, paths[i], fl)
	}
	l.applyFrom(t, paths[0])
	before := approvedBy(t, l.db)
	if out, _ := l.applyFrom(t, paths[1]); !strings.Contains(out, "as a delta from generation") {
		t.Fatalf("the second apply did not go as a delta:\n%s", out)
	}
	got := approvedBy(t, l.db)
	gen2 := got[added.FlowKey]
	if gen2 == 0 {
		t.Fatalf("the flow the delta added is not approved")
	}
	for _, f := range flows {
		if got[f.FlowKey] == 0 || got[f.FlowKey] != before[f.FlowKey] {
			t.Fatalf("flow %v approved by %d after the delta, by %d before", f.FlowKey, got[f.FlowKey], before[f.FlowKey])
		}
	}

	// Un-approved in the store, then the next delta.
	st, err := store.Create(l.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetApproval([]store.FlowKey{flows[7].FlowKey}, func(f *store.Flow) { f.Approved, f.Retired = 0, now }); err != nil {
		t.Fatal(err)
	}
	if out, _ := l.applyFrom(t, paths[2]); !strings.Contains(out, "as a delta from generation") {
		t.Fatalf("the third apply did not go as a delta:\n%s", out)
	}
	got = approvedBy(t, l.db)
	gen3 := got[third.FlowKey]
	if gen3 <= gen2 || got[flows[7].FlowKey] != gen3 {
		t.Errorf("after a flow was un-approved: it is approved by %d, the flow added by %d (want both by the third apply's, after %d)", got[flows[7].FlowKey], gen3, gen2)
	}
	for _, f := range exports[2] {
		if got[f.FlowKey] == 0 {
			t.Errorf("flow %v of the plan applied is not approved", f.FlowKey)
		}
	}
}
