package main

import (
	"fmt"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
)

// TestStagedStatusLinear: status says, for every staged service, whether
// the table holds its cgroup's id, and the configuration stages as many
// as it likes: each was looked for in the table's list (40k took 7 s).
// The status of n staged services costs about ten times that of n/10 (at
// most scaletest.Linear's limit), and each service's
// state is still told: not running, stale (restarted: the table holds
// the old id) or enforced.
func TestStagedStatusLinear(t *testing.T) {
	running := func(svc string) bool { return len(svc)%7 != 0 }
	states := func(n int) (*plan.Plan, *nft.Status) {
		p := &plan.Plan{Mode: plan.ModeStaged}
		st := &nft.Status{}
		for i := range n {
			svc := fmt.Sprintf("system.slice/x%d.service", i)
			p.EnforceServices = append(p.EnforceServices, svc)
			if i%10 != 3 {
				st.EnforceServices = append(st.EnforceServices, svc)
			}
		}
		return p, st
	}
	check := func(n int) {
		p, st := states(n)
		out := stagedServices(p, st, running)
		if len(out) != n {
			t.Errorf("%d staged services told, want %d", len(out), n)
			return
		}
		for i, ss := range out {
			want := "enforced"
			switch {
			case !running(ss.Service):
				want = "not-running"
			case i%10 == 3:
				want = "audited" // stale
			}
			if ss.State != want || ss.Stale != (want == "audited") {
				t.Errorf("%s: %s (stale %v), want %s", ss.Service, ss.State, ss.Stale, want)
				return
			}
		}
	}
	scaletest.Linear(t, "the status of staged services", 40_000, func(n int) func() { return func() { check(n) } })
}
