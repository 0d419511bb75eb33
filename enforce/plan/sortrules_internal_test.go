package plan

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSortNameRulesAsSortFunc: a large list of name rules (one UID or
// several, names sharing their first 12 bytes or more, shorter and longer
// names of one prefix, zero bytes, equal rules, other protocols, ports
// and sources) is sorted as slices.SortFunc sorts it by compareNameRules.
func TestSortNameRulesAsSortFunc(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"", "a", "ab", "ab\x00", "ab\x00\x01", "abcdefghijkl", "abcdefghijklm", "abcdefghijkl\x00",
		"abcdefghijk", "abcdefghijkla", "svc1.example.net", "svc1.example.net.", "svc10.example.net", "zz"}
	for _, uids := range []int{1, 3} {
		for _, n := range []int{4096, 10001} {
			t.Run(fmt.Sprint(uids, n), func(t *testing.T) {
				rules := make([]NameRule, n)
				for i := range rules {
					name := names[rng.IntN(len(names))]
					if rng.IntN(3) == 0 {
						name = fmt.Sprintf("svc%d.r%d.cdn.example.net", rng.IntN(5000), rng.IntN(20))
					}
					rules[i] = NameRule{UID: 1000 + uint32(rng.IntN(uids)), Name: name, Proto: []uint8{6, 17}[rng.IntN(2)],
						Port: uint16(rng.IntN(3)), Source: []string{"learned", "configuration"}[rng.IntN(2)]}
				}
				want := slices.Clone(rules)
				slices.SortFunc(want, compareNameRules)
				sortNameRules(rules)
				if !slices.Equal(rules, want) {
					for i := range rules {
						if rules[i] != want[i] {
							t.Fatalf("rule %d: %+v, want %+v", i, rules[i], want[i])
						}
					}
				}
			})
		}
	}
}
