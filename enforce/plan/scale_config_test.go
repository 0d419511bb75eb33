package plan_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
)

// linearIn says whether the work of size n costs about ten times the work
// of size n/10, on the same machine (the best of three each): prepare
// makes the inputs of a size, untimed, and returns the work. A linear
// search per item makes the ratio a hundred; the limit is 30, and the
// large work may take three seconds before it fails (the VM's noise and
// its load make small figures swing).
func linearIn(t *testing.T, what string, n int, prepare func(n int) func()) {
	t.Helper()
	var small time.Duration
	best := func(n int, limit time.Duration) time.Duration {
		var d time.Duration
		for range 3 {
			work := prepare(n)
			done := make(chan struct{})
			start := time.Now()
			go func() { work(); close(done) }()
			select {
			case <-done:
			case <-time.After(limit):
				t.Fatalf("%s of %d took more than %v (of %d: %v)", what, n, limit, n/10, small)
			}
			if e := time.Since(start); d == 0 || e < d {
				d = e
			}
		}
		return d
	}
	small = best(n/10, time.Hour)
	large := best(n, max(30*small, 3*time.Second))
	t.Logf("%s: %d %v, %d %v: %.1fx", what, n/10, small, n, large, float64(large)/float64(small))
}

// addrN is the n-th address of 11.0.0.0/8.
func addrN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
}

// TestCompareRulesLinear: plan diff compares the rules by their comments,
// and the configuration makes a rule of every always_allow entry: a
// linear search in the other side's list per rule made 20k entries take
// 1.5 s, 40k six. The diff of n rules costs about ten times that of n/10.
func TestCompareRulesLinear(t *testing.T) {
	build := func(n int) (plan.Installed, *plan.Plan) {
		o := plan.Options{Mode: plan.ModeEnforce, Now: tp}
		for i := range n {
			o.AlwaysAllow = append(o.AlwaysAllow, plan.Allow{Proto: plan.ProtoTCP, Dest: netip.PrefixFrom(addrN(i), 32), Port: 443})
		}
		p := plan.Build(nil, o)
		st := plan.Installed{Present: true, Mode: p.Mode}
		for _, r := range p.Rules {
			st.Rules = append(st.Rules, r.Comment)
		}
		return st, p
	}
	linearIn(t, "the diff of rules", 40_000, func(n int) func() {
		st, p := build(n)
		return func() {
			if d := plan.Compare(st, p); !d.Empty() {
				t.Errorf("a plan compared with itself: %d rules added, %d removed", len(d.RulesAdded), len(d.RulesRemoved))
			}
		}
	})
	// What changed is still told, in order.
	st, p := build(3)
	st.Rules = append(slices.Delete(slices.Clone(st.Rules), 4, 5), "gone", "gone too")
	d := plan.Compare(st, p)
	if !slices.Equal(d.RulesAdded, []string{p.Rules[4].Comment}) || !slices.Equal(d.RulesRemoved, []string{"gone", "gone too"}) {
		t.Fatalf("rules added %q, removed %q; want %q and the two gone", d.RulesAdded, d.RulesRemoved, p.Rules[4].Comment)
	}
}
