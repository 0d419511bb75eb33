package plan_test

import (
	"fmt"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
	"github.com/egresskit/egress/store"
)

// TestIPOnlyLinear: follow_ip_only is the configuration's, as long as it
// likes, and every hostname of every flow was looked for in it by a
// linear search: n flows and n listed names cost n² (10k of each took
// 0.75 s, 30k seven). Ten times the flows and the list cost about ten
// times, and the listed names are still kept to their addresses.
func TestIPOnlyLinear(t *testing.T) {
	prepare := func(n int) ([]store.Flow, plan.Options) {
		o := plan.Options{Mode: plan.ModeEnforce, Now: tp, Follow: &plan.FollowOptions{Mode: plan.FollowBoth}}
		flows := make([]store.Flow, n)
		for i := range n {
			flows[i] = pflow(1000, plan.ProtoTCP, addrN(i).String(), 443, 5, tp, fmt.Sprintf("h%d.example", i))
			o.Follow.IPOnly = append(o.Follow.IPOnly, fmt.Sprintf("h%d.example", 2*i+1)) // every other name listed
		}
		return flows, o
	}
	scaletest.Linear(t, "a plan with follow_ip_only", 30_000, func(n int) func() {
		flows, o := prepare(n)
		return func() {
			if p := plan.Build(flows, o); len(p.Follow.Rules) != n/2 {
				t.Errorf("%d names followed, want %d", len(p.Follow.Rules), n/2)
			}
		}
	})
	// A short list is searched: the same names followed.
	for _, n := range []int{10, 40} {
		flows, o := prepare(n)
		if p := plan.Build(flows, o); len(p.Follow.Rules) != n/2 || p.Follow.Rules[0].Name != "h0.example" {
			t.Fatalf("%d flows: %d names followed, the first %q", n, len(p.Follow.Rules), p.Follow.Rules[0].Name)
		}
	}
}

// TestStagedNameChecksLinear: a plan staged by user asks, for every
// name-checked element and template, whether the table enforces its
// user: a linear search in the staged list, which the configuration or
// the command line makes as long as the host has users (n users with a
// flow each: n², 40k 0.9 s, 100k five). Ten times the users cost about
// ten times, and each user's mode is still the stage's.
func TestStagedNameChecksLinear(t *testing.T) {
	build := func(n int, audit bool) *plan.Plan {
		o := plan.Options{Mode: plan.ModeEnforce, Now: tp, NameCheck: plan.NameCheckEnforce,
			Follow: &plan.FollowOptions{Mode: plan.FollowBoth}}
		flows := make([]store.Flow, n)
		for i := range n {
			flows[i] = pflow(uint32(i), plan.ProtoTCP, addrN(i).String(), 443, 5, tp, fmt.Sprintf("h%d.example", i))
			if i%2 == 0 && audit {
				o.AuditUIDs = append(o.AuditUIDs, uint32(i))
			} else if i%2 == 0 {
				o.EnforceUIDs = append(o.EnforceUIDs, uint32(i))
			}
		}
		return plan.Build(flows, o)
	}
	check := func(p *plan.Plan, n int, audit bool) {
		checks, followed := p.NameChecks(), p.FollowNameChecks()
		if len(checks) != n || len(followed) != n {
			t.Errorf("%d name checks, %d templates; want %d each", len(checks), len(followed), n)
			return
		}
		for _, c := range append(checks, followed...) {
			if want := map[bool]string{true: plan.NameCheckEnforce, false: plan.NameCheckAudit}[(c.UID%2 == 0) != audit]; c.Mode != want {
				t.Errorf("uid %d (followed %v) name-checked in %s mode, want %s", c.UID, c.Followed, c.Mode, want)
				return
			}
		}
	}
	scaletest.Linear(t, "the name checks of a staged plan", 100_000, func(n int) func() {
		p := build(n, false)
		return func() { check(p, n, false) }
	})
	for _, n := range []int{10, 40, 4000} {
		check(build(n, false), n, false)
		check(build(n, true), n, true)
	}
}
