package plan_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// deltaFlows are n flows of a few users, IPv4 and IPv6, with names.
func deltaFlows(n int) []store.Flow {
	var out []store.Flow
	for i := range n {
		ip := fmt.Sprintf("11.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if i%5 == 0 {
			ip = fmt.Sprintf("2001:db8::%x:%x", (i+1)>>16, (i+1)&0xffff)
		}
		out = append(out, pflow(uint32(1000+i%3), plan.ProtoTCP, ip, 443, uint64(i+1), tp, fmt.Sprintf("h%d.example", i)))
	}
	return out
}

func deltaOptions(mode plan.Mode) plan.Options {
	return plan.Options{Mode: mode, Now: tp, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth}}
}

// changed is flows with the first remove dropped, add new ones, and the
// hits of every tenth changed (so its comment changes).
func changed(flows []store.Flow, remove, add int) []store.Flow {
	out := append([]store.Flow(nil), flows[remove:]...)
	for i := range out {
		if i%10 == 0 {
			out[i].Hits += 1000
		}
	}
	for i := range add {
		out = append(out, pflow(2000, plan.ProtoUDP, fmt.Sprintf("198.51.100.%d", 1+i), 53, 1, tp, fmt.Sprintf("new%d.example", i)))
	}
	return out
}

// TestDeltaAndPatch: the delta between two plans deletes the removed
// elements, adds the new ones, replaces those whose comment changed, and
// keeps the rules; the patch made from it gives the new plan back from the
// old one, exactly.
func TestDeltaAndPatch(t *testing.T) {
	flows := deltaFlows(300)
	from := plan.Build(flows, deltaOptions(plan.ModeAudit))
	to := plan.Build(changed(flows, 7, 11), deltaOptions(plan.ModeAudit))
	fromIdx := plan.IndexOf(from)
	d, err := plan.NewDelta(fromIdx, to)
	if err != nil {
		t.Fatal(err)
	}
	del, add := d.Elements()
	// 7 removed; 11 added; every tenth of the 293 kept got new hits: 30.
	if d.Changed != 30 || del != 7+30 || add != 11+30 {
		t.Errorf("delta: %d deleted, %d added, %d changed; want 37, 41, 30", del, add, d.Changed)
	}
	if d.Policy != "" || d.Head+d.Tail != len(to.Rules) || d.FromRules != len(from.Rules) {
		t.Errorf("delta keeps %d+%d of %d rules, policy %q; want every rule kept, the policy too", d.Head, d.Tail, len(to.Rules), d.Policy)
	}
	checkPatch(t, from, fromIdx, to, d)

	// Enforce instead of audit: the policy and the default rules change.
	enforce := plan.Build(changed(flows, 7, 11), deltaOptions(plan.ModeEnforce))
	d, err = plan.NewDelta(fromIdx, enforce)
	if err != nil {
		t.Fatal(err)
	}
	rdel, rins := d.RulesChanged(len(enforce.Rules))
	if d.Policy != "drop" || rdel != 1 || rins != 2 {
		t.Errorf("audit to enforce: policy %q, %d rules deleted, %d inserted; want drop, 1, 2", d.Policy, rdel, rins)
	}
	checkPatch(t, from, fromIdx, enforce, d)
}

// checkPatch makes the patch from `from` to `to` and applies it to a copy
// of from as read back from JSON (the store's), expecting to exactly.
func checkPatch(t *testing.T, from *plan.Plan, fromIdx *plan.Index, to *plan.Plan, d *plan.Delta) {
	t.Helper()
	pt := plan.MakePatch(4, fromIdx, to, plan.IndexOf(to), d)
	data, err := pt.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !plan.IsPatch(data) {
		t.Fatalf("patch JSON %.40s... not known as a patch", data)
	}
	back, err := plan.DecodePatch(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := plan.ApplyPatch(roundTrip(t, from), back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(roundTrip(t, got), roundTrip(t, to)) {
		t.Errorf("the patched plan differs from the plan")
	}
	// The same patch on another base is refused.
	other := roundTrip(t, from)
	other.Sets[0].Elements[3].Comment = "tampered"
	if _, err := plan.ApplyPatch(other, back); err == nil {
		t.Errorf("a patch applied to another base was accepted")
	}
}

func roundTrip(t *testing.T, p *plan.Plan) *plan.Plan {
	t.Helper()
	data, err := p.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var out plan.Plan
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestNoDeltaWhenTheTableDiffersOtherwise: another table, set sizes that
// must grow, other staged users, another follow timeout: no delta, and
// the reason says why.
func TestNoDeltaWhenTheTableDiffersOtherwise(t *testing.T) {
	flows := deltaFlows(40)
	from := plan.IndexOf(plan.Build(flows, deltaOptions(plan.ModeEnforce)))
	cases := map[string]*plan.Plan{
		"another table": func() *plan.Plan {
			o := deltaOptions(plan.ModeEnforce)
			o.Table = "other"
			return plan.Build(flows, o)
		}(),
		"set allow4 needs size 128": plan.Build(changed(flows, 0, 60), deltaOptions(plan.ModeEnforce)),
		"other users staged": func() *plan.Plan {
			o := deltaOptions(plan.ModeEnforce)
			o.EnforceUIDs = []uint32{1000}
			return plan.Build(flows, o)
		}(),
		"per-service sets": func() *plan.Plan {
			o := deltaOptions(plan.ModeEnforce)
			o.Match = plan.MatchService
			return plan.Build(flows, o)
		}(),
		"another follow_ttl_floor": func() *plan.Plan {
			o := deltaOptions(plan.ModeEnforce)
			o.Follow.TTLFloor = 1234e9
			return plan.Build(flows, o)
		}(),
	}
	for why, to := range cases {
		_, err := plan.NewDelta(from, to)
		if !errors.Is(err, plan.ErrNoDelta) || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: %v", why, err)
		}
	}
}

// TestIndexEncoding: an index reads back as written; a cut or altered one
// is refused.
func TestIndexEncoding(t *testing.T) {
	x := plan.IndexOf(plan.Build(deltaFlows(50), deltaOptions(plan.ModeEnforce)))
	data := x.Encode()
	back, err := plan.DecodeIndex(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Sets, x.Sets) || !reflect.DeepEqual(back.Rules, x.Rules) || len(back.Head.Rules) != len(x.Head.Rules) {
		t.Errorf("the index reads back otherwise")
	}
	for _, bad := range [][]byte{data[:len(data)-1], append(append([]byte(nil), data...), 0), data[:30], []byte("x")} {
		if _, err := plan.DecodeIndex(bad); err == nil {
			t.Errorf("a damaged index of %d bytes was read", len(bad))
		}
	}
}

// TestSetSize: room to grow, in powers of two, the same for nearby sizes.
func TestSetSize(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 64, 51: 64, 52: 128, 100000: 131072, 104858: 131072, 104859: 262144} {
		if got := plan.SetSize(n); got != want {
			t.Errorf("SetSize(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestDiffRules: the walk with its window and the map give the same
// rules added and removed, for changes near and far apart.
func TestDiffRules(t *testing.T) {
	sum := func(i int) (s plan.RuleSum) { s[0], s[1] = byte(i>>8), byte(i); return s }
	list := func(from, to int, skip ...int) []plan.RuleSum {
		var out []plan.RuleSum
		for i := from; i < to; i++ {
			if !slices.Contains(skip, i) {
				out = append(out, sum(i))
			}
		}
		return out
	}
	cases := []struct {
		old, new          []plan.RuleSum
		wantAdd, wantGone int
	}{
		{list(0, 100), list(0, 100), 0, 0},
		{list(0, 100, 5, 6, 50), list(0, 100, 7, 99), 3, 2},       // near changes
		{list(0, 300, 1), list(0, 300, 200, 201, 202, 203), 1, 4}, // far
		{list(0, 100), list(200, 300), 100, 100},                  // nothing in common
		{nil, list(0, 3), 3, 0},
		{list(0, 3), nil, 0, 3},
	}
	for i, c := range cases {
		added, removed := plan.DiffRules(c.old, c.new)
		if len(added) != c.wantAdd || len(removed) != c.wantGone {
			t.Errorf("case %d: %d added, %d removed; want %d, %d", i, len(added), len(removed), c.wantAdd, c.wantGone)
		}
		got := map[plan.RuleSum]bool{}
		for _, s := range c.old {
			got[s] = true
		}
		for _, s := range removed {
			delete(got, s)
		}
		for _, j := range added {
			got[c.new[j]] = true
		}
		if len(got) != len(c.new) {
			t.Errorf("case %d: old - removed + added has %d rules, new has %d", i, len(got), len(c.new))
		}
		for _, s := range c.new {
			if !got[s] {
				t.Errorf("case %d: rule %x missing", i, s[:2])
			}
		}
	}
}
