package baseline

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// tp is when the tests' flows were last seen; pflow makes one.
var (
	tp    = plantest.T0
	pflow = plantest.Flow
)

func rflow(uid uint32, ip string, port uint16, hits uint64, first, last time.Time, approved uint64, names ...string) store.Flow {
	f := pflow(uid, plan.ProtoTCP, ip, port, hits, last, names...)
	f.FirstSeen = first
	f.Approved = approved
	if approved != 0 {
		f.ApprovedAt = first
		f.ApprovedNames = names
	}
	return f
}

func keysOf(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Source+" "+netip.AddrPortFrom(c.IP, c.Port).String())
	}
	return out
}

// clockStore is a store's flows and observations at now: approved,
// stale, candidate, retired and renamed flows, a destination only the
// monitor saw, and one no socket owned.
func clockStore(now time.Time) ([]store.Flow, []store.Observation, map[store.FlowKey][]string) {
	day := 24 * time.Hour
	retired := rflow(1, "192.0.2.5", 443, 4, now.Add(-60*day), now.Add(-50*day), 0)
	retired.Retired = now.Add(-40 * day)
	back := rflow(1, "192.0.2.6", 443, 9, now.Add(-60*day), now.Add(-1*day), 0)
	back.Retired = now.Add(-40 * day) // seen again since
	flows := []store.Flow{
		rflow(1, "192.0.2.1", 443, 50, now.Add(-20*day), now.Add(-time.Hour), 1, "a.example"),
		rflow(1, "192.0.2.2", 443, 5, now.Add(-20*day), now.Add(-40*day+time.Hour), 1),
		rflow(1, "192.0.2.3", 443, 3, now.Add(-2*day), now.Add(-time.Hour), 0), // candidate
		rflow(1, "192.0.2.4", 443, 1, now.Add(-2*day), now.Add(-time.Hour), 0), // candidate, 1 hit
		retired, back,
		rflow(2, "192.0.2.9", 80, 7, now.Add(-10*day), now.Add(-3*day), 1, "old.example"),
	}
	flows[6].Hostnames = []string{"old.example", "new.example"} // renamed since approval
	obs := []store.Observation{
		{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 2, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("198.51.100.7"), Port: 8443}, Hits: 6, FirstSeen: now.Add(-time.Hour), LastSeen: now},
		{Kind: store.ObsAudit, FlowKey: flows[0].FlowKey, Hits: 3, FirstSeen: now, LastSeen: now}, // known: ignored
		{Kind: store.ObsAudit, FlowKey: store.FlowKey{UID: store.NoUID, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("198.51.100.8"), Port: 1}, Hits: 9, FirstSeen: now, LastSeen: now},
	}
	names := map[store.FlowKey][]string{obs[0].FlowKey: {"api.example"}}
	return flows, obs, names
}

// TestReconcileWithAMovingClock: the same store reconciled at two times.
func TestReconcileWithAMovingClock(t *testing.T) {
	day := 24 * time.Hour
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	flows, obs, names := clockStore(now)
	p := Reconcile(flows, obs, names, 3, ReconcileOptions{MinHits: 2, Now: now})

	if got := keysOf(p.Additions); !slices.Equal(got, []string{"candidate 192.0.2.3:443", "candidate 192.0.2.6:443"}) {
		t.Errorf("additions %v", got)
	}
	if got := keysOf(p.Denied); !slices.Equal(got, []string{"drop 198.51.100.7:8443"}) {
		t.Errorf("denied %v", got)
	}
	if got := keysOf(p.Removals); !slices.Equal(got, []string{"stale 192.0.2.2:443"}) {
		t.Errorf("removals %v", got)
	}
	if len(p.Renamed) != 1 || p.Renamed[0].IP != netip.MustParseAddr("192.0.2.9") || len(p.Renamed[0].New) != 2 {
		t.Errorf("renamed %+v", p.Renamed)
	}
	if p.Denied[0].Hostnames[0] != "api.example" || p.Denied[0].Hits != 6 {
		t.Errorf("the denied destination: %+v", p.Denied[0])
	}
	checkNextAndConvergence(t, p, now)
	// --only splits the change.
	if a := Reconcile(flows, obs, names, 3, ReconcileOptions{MinHits: 2, Now: now, Only: "add"}); len(a.Removals) != 0 || len(a.Additions) != 2 {
		t.Errorf("--only add: %d additions, %d removals", len(a.Additions), len(a.Removals))
	}
	if r := Reconcile(flows, obs, names, 3, ReconcileOptions{MinHits: 2, Now: now, Only: "remove"}); len(r.Additions) != 0 || len(r.Removals) != 1 {
		t.Errorf("--only remove: %d additions, %d removals", len(r.Additions), len(r.Removals))
	}

	// 30 days later, nothing new seen: the approved flows expire, every
	// user has converged.
	later := Reconcile(flows, nil, nil, 3, ReconcileOptions{MinHits: 2, Now: now.Add(31 * day)})
	if got := keysOf(later.Removals); len(got) != 3 {
		t.Errorf("removals 31 days later: %v", got)
	}
	if !later.Stable {
		t.Errorf("not stable 31 days later: %+v", later.Convergence)
	}
	var b strings.Builder
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"+ tcp 192.0.2.3:443", "- tcp 192.0.2.2:443", "[drop]", "~ 192.0.2.9: old.example -> old.example,new.example", "still learning", "2 to add, 1 to remove, 1 denied only left out"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("proposal text lacks %q:\n%s", w, b.String())
		}
	}
}

// checkNextAndConvergence: the next baseline keeps the approved flows and
// adds the candidates; user 1's newest destination is 1 day old (the one
// seen again), user 2's 10 days.
func checkNextAndConvergence(t *testing.T, p *Proposal, now time.Time) {
	day := 24 * time.Hour
	var next []string
	for _, f := range p.Next() {
		next = append(next, f.IP.String())
	}
	slices.Sort(next)
	if !slices.Equal(next, []string{"192.0.2.1", "192.0.2.3", "192.0.2.6", "192.0.2.9"}) {
		t.Errorf("next baseline %v", next)
	}
	for _, c := range p.Convergence {
		switch c.UID {
		case 1:
			if c.Stable || c.NewPerDay[4] != 2 {
				t.Errorf("user 1: %+v", c)
			}
		case 2:
			if !c.Stable || c.LastNew != now.Add(-10*day) {
				t.Errorf("user 2: %+v", c)
			}
		}
	}
	if p.Stable {
		t.Error("stable while user 1 still learns")
	}

}

func TestBaselineFlowsAreTheApprovedOnes(t *testing.T) {
	now := tp
	all := []store.Flow{rflow(1, "192.0.2.1", 1, 1, now, now, 0), rflow(1, "192.0.2.2", 1, 1, now, now, 0)}
	if got := Select(all); len(got) != 2 {
		t.Errorf("before any approval: %d flows, want all", len(got))
	}
	all[0].Approved = 1
	if got := Select(all); len(got) != 1 || got[0].IP != all[0].IP {
		t.Errorf("after an approval: %+v, want only the approved flow", got)
	}
}

func TestMergeKeepsProvenance(t *testing.T) {
	now := tp
	a := &store.Export{Format: store.ExportFormat, Host: "web-1", Exported: now, Users: map[uint32]string{1001: "deploy"},
		Flows: []store.Flow{rflow(1001, "192.0.2.1", 443, 5, now.Add(-time.Hour), now, 0, "api.example"), rflow(1001, "192.0.2.2", 443, 1, now, now, 0)}}
	retired := rflow(1001, "192.0.2.3", 443, 1, now.Add(-48*time.Hour), now.Add(-48*time.Hour), 0)
	retired.Retired = now.Add(-time.Hour)
	b := &store.Export{Format: store.ExportFormat, Host: "web-2", Exported: now, Users: map[uint32]string{1002: "deploy"},
		Flows: []store.Flow{rflow(1001, "192.0.2.1", 443, 7, now.Add(-2*time.Hour), now.Add(-time.Minute), 0, "cdn.example"), retired}}
	m := Merge([]*store.Export{a, b})
	if len(m.Flows) != 2 {
		t.Fatalf("merged flows %+v", m.Flows)
	}
	f := m.Flows[0]
	if f.Hits != 12 || !f.FirstSeen.Equal(now.Add(-2*time.Hour)) || !f.LastSeen.Equal(now) || len(f.Hostnames) != 2 {
		t.Errorf("merged flow %+v", f)
	}
	if h := m.Hosts[f.FlowKey]; !slices.Equal(h, []string{"web-1", "web-2"}) {
		t.Errorf("provenance %v", h)
	}
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0], "user deploy has different UIDs") {
		t.Errorf("warnings %v", m.Warnings)
	}
	p := plan.Build(m.Flows, plan.Options{Hosts: m.Hosts, Now: now})
	e := p.Sets[0].Elements[0]
	if !strings.Contains(e.Comment, "hosts 2") || !slices.Equal(e.Hosts, []string{"web-1", "web-2"}) {
		t.Errorf("element %+v", e)
	}
}
