//go:build linux

package baseline

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

// TestReconcileApplyApprovesAndRetires: the first apply approves its
// flows; a reconcile applied later adds the candidate (and, included, the
// denied-only destination, stored as the monitor saw it), retires the
// stale flow, and the next plan holds exactly the approved flows.
func TestReconcileApplyApprovesAndRetires(t *testing.T) {
	day := 24 * time.Hour
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	now := start.Add(40 * day)
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := nft.NewFake(nft.Target{})
	opts := plan.Options{Mode: plan.ModeEnforce, Now: start, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}
	apply := func(p *plan.Plan) uint64 {
		t.Helper()
		g, _, err := rollout.Apply(k, p, rollout.Options{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return g.N
	}
	stale, kept := rflow(1, "192.0.2.1", 443, 5, start, start, 0), rflow(1, "192.0.2.2", 443, 5, start, now, 0)
	if err := st.Apply(&store.Batch{Flows: []store.Flow{stale, kept}}); err != nil {
		t.Fatal(err)
	}
	flows, _ := st.Flows()
	first := plan.Build(Select(flows), opts)
	if err := ApprovePlan(st, first, apply(first), start); err != nil {
		t.Fatal(err)
	}
	candidate := rflow(1, "192.0.2.3", 8443, 4, now, now, 0)
	knock := store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 1, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("198.51.100.9"), Port: 22},
		Hits: 3, FirstSeen: now, LastSeen: now}
	if err := st.Apply(&store.Batch{Flows: []store.Flow{candidate}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RecordObservations(&store.ObservationBatch{Observations: []store.Observation{knock}}); err != nil {
		t.Fatal(err)
	}

	p, err := ReconcileStore(st, nil, 1, ReconcileOptions{Now: now, IncludeDenied: true})
	if err != nil || len(p.Additions) != 1 || len(p.Denied) != 1 || len(p.Removals) != 1 {
		t.Fatalf("proposal %+v %v", p, err)
	}
	opts.Now = now
	next := plan.Build(p.Next(), opts)
	if err := p.Approve(st, apply(next), now); err != nil {
		t.Fatal(err)
	}
	dump := k.Dump()
	for want, in := range map[string]bool{"192.0.2.2 . tcp . 443": true, "192.0.2.3 . tcp . 8443": true, "198.51.100.9 . tcp . 22": true, "192.0.2.1 . tcp . 443": false} {
		if strings.Contains(dump, want) != in {
			t.Errorf("the applied table holds %s: %v, want %v\n%s", want, !in, in, dump)
		}
	}
	flows, _ = st.Flows()
	again := plan.Build(Select(flows), opts)
	if again.Flows != 3 || again.Sets[0].Elements[0].IP != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("the next baseline: %+v", again.Sets[0].Elements)
	}
	for _, f := range flows {
		if f.IP == netip.MustParseAddr("198.51.100.9") && (f.Hits != 3 || f.Approved != 2) {
			t.Errorf("the denied-only destination is stored as %+v", f)
		}
		if f.IP == stale.IP && (f.Approved != 0 || f.Retired.IsZero()) {
			t.Errorf("the stale flow is %+v", f)
		}
	}
}
