package plan_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
)

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
	scaletest.Linear(t, "the diff of rules", 40_000, func(n int) func() {
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
