package plan_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestNoNamesNoMarkRule: a table whose follow options give no name rule
// (the default follow_mode both, no learned name, no follow_names) has no
// follow sets and no mark rule: the mark is accepted nowhere.
func TestNoNamesNoMarkRule(t *testing.T) {
	flows := []store.Flow{pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, tp)}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, Now: tp, Follow: &plan.FollowOptions{Mode: plan.FollowBoth}})
	if p.Follow != nil {
		t.Errorf("a plan with no name rule follows: %+v", p.Follow)
	}
	text := p.String()
	for _, w := range []string{"meta mark", plan.SetFollowGate, plan.SetFollow4, "socket cgroupv2"} {
		if strings.Contains(text, w) {
			t.Errorf("a table that follows no name has %q:\n%s", w, text)
		}
	}
}

// TestFollowRulesAndGate: with names, the follow sets are looked up before
// the mark rules, which accept the mark only from a running follower's
// cgroup (set follow_gate, one rule per cgroup level); the TTL cap
// defaults to an hour and is never below the floor.
func TestFollowRulesAndGate(t *testing.T) {
	flows := []store.Flow{pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, tp, "api.example.com")}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, Now: tp, Follow: &plan.FollowOptions{Mode: plan.FollowBoth}})
	if p.Follow == nil || p.Follow.TTLMax != plan.DefaultTTLMax {
		t.Fatalf("follow spec %+v", p.Follow)
	}
	lookup := slices.IndexFunc(p.Rules, func(r plan.Rule) bool { return r.Set == plan.SetFollow6 })
	first := slices.IndexFunc(p.Rules, func(r plan.Rule) bool { return r.Kind == plan.RuleFollowMark })
	if lookup < 0 || first < lookup {
		t.Errorf("the mark rules (from %d) come before the follow sets (%d)", first, lookup)
	}
	marks := 0
	for _, r := range p.Rules {
		if r.Kind != plan.RuleFollowMark {
			continue
		}
		want := "meta mark & 0x10000000 == 0x10000000 socket cgroupv2 level " + string(rune('0'+marks)) + " @follow_gate counter accept"
		if r.Text != want {
			t.Errorf("mark rule %d: %q, want %q", marks, r.Text, want)
		}
		marks++
	}
	if marks != plan.FollowGateLevels {
		t.Errorf("%d mark rules, want one per cgroup level (%d)", marks, plan.FollowGateLevels)
	}
	p = plan.Build(flows, plan.Options{Now: tp, Follow: &plan.FollowOptions{Mode: plan.FollowBoth, TTLFloor: 2 * time.Hour, TTLMax: time.Hour}})
	if p.Follow.TTLMax != 2*time.Hour {
		t.Errorf("a cap below the floor: %s", p.Follow.TTLMax)
	}
}
