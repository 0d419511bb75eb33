package baseline

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// TestExportMemoRulesInPlace: a read against the memo merges the changed
// name rules into the memo's rules in place (rules gone, counts changed,
// new rules put in from the end), or into a new array when the new rules
// do not fit in the room the memo's read made: the plan is the full
// path's either way, and the rules' order and counts are the memo's next
// time.
func TestExportMemoRulesInPlace(t *testing.T) {
	for _, added := range []int{3, 40, 1200} { // 1200 new rules: more than the room
		t.Run(fmt.Sprint(added), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, uint64(added)))
			dir := t.TempDir()
			flows := memoFlows(rng, 3000)
			o := memoOptions(plan.FollowBoth, "")
			base, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
			writeMemoExport(t, base, flows[:2500], true)
			memoPlan(t, base, memoPath, 1, o)
			changed := slices.Concat(flows[:300], flows[350:2500], flows[2500:2520])
			for i := range added {
				at := (i * 7919) % len(changed)
				changed[at].Hostnames = append(slices.Clone(changed[at].Hostnames), fmt.Sprintf("n%d.example.com", i))
			}
			changed[0].Hostnames = nil // a rule's count down, or gone
			next := filepath.Join(dir, "next.json")
			writeMemoExport(t, next, changed, true)
			if r := memoPlan(t, next, memoPath, 1, o); r.Reason != "" {
				t.Fatalf("the memo was not used: %q", r.Reason)
			}
			writeMemoExport(t, base, flows[:2500], true) // and back, against the memo just written
			if r := memoPlan(t, base, memoPath, 1, o); r.Reason != "" {
				t.Fatalf("the memo was not used: %q", r.Reason)
			}
		})
	}
}
