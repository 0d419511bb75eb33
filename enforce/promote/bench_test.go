package promote

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// largeScene is a large host: 100,000 flows of 1,000 users, the
// observations' bound (20,000) full of audited packets in the period, and
// a run record an hour for the whole period.
func largeScene() Input {
	in := scene()
	in.Flows = make([]store.Flow, 0, 100_000)
	for i := range 100_000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		in.Flows = append(in.Flows, store.Flow{FlowKey: store.FlowKey{UID: uint32(2000 + i%1000), Proto: plan.ProtoTCP, IP: ip, Port: 443},
			Hits: 3, FirstSeen: long, LastSeen: long, Approval: store.Approval{Approved: 1}})
	}
	in.Plan = plan.Build(in.Flows, plan.Options{Mode: plan.ModeAudit, Now: applied})
	in.Observations = make([]store.Observation, 0, store.DefaultMaxObservations)
	for i := range store.DefaultMaxObservations {
		ip := netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})
		in.Observations = append(in.Observations, store.Observation{Kind: store.ObsAudit,
			FlowKey: store.FlowKey{UID: uint32(2000 + i%1000), Proto: plan.ProtoTCP, IP: ip, Port: 8443},
			Hits:    1, FirstSeen: now.Add(-time.Hour), LastSeen: now.Add(-time.Hour)})
	}
	in.Watches = nil
	for at := applied; at.Before(now); at = at.Add(time.Hour) {
		in.Watches = append(in.Watches, store.Watch{Start: at, End: at.Add(time.Hour), Group: plan.DefaultNFLOGGroup, Counters: true})
	}
	return in
}

// BenchmarkEvaluate judges the large host: go test -bench Evaluate
// ./enforce/promote/ prints the time of one promotion's judgement
// (without reading the store).
func BenchmarkEvaluate(b *testing.B) {
	in := largeScene()
	b.ReportAllocs()
	for b.Loop() {
		r, err := Evaluate(in, Options{Now: now, QuietFor: DefaultQuietFor})
		if err != nil || len(r.Principals) < 1000 {
			b.Fatalf("%d principals, %v", len(r.Principals), err)
		}
	}
}

// TestLargeHostIsBounded: on the large host every user's audited
// destinations are listed at most maxListed times, whatever their number.
func TestLargeHostIsBounded(t *testing.T) {
	r := evaluate(t, largeScene())
	for _, p := range r.Principals {
		if len(p.Reasons) > 2*maxListed+4 {
			t.Fatalf("%s: %d reasons", p.Name, len(p.Reasons))
		}
	}
}
