package baseline

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// BenchmarkWriteMemo100k writes the next memo of a 100,000-flow export
// changed in 200 flows, read against the memo of the one before: most
// of its records are the old memo's.
func BenchmarkWriteMemo100k(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	flows := memoFlows(rng, 100_200)
	dir := b.TempDir()
	base, next, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "next.json"), filepath.Join(dir, "memo")
	writeMemoExport(b, base, flows[:100_000], true)
	writeMemoExport(b, next, slices.Concat(flows[100:100_000], flows[100_000:]), true)
	o := memoOptions(plan.FollowBoth, "")
	o.UserName = nil
	oo := o
	r, err := ReadExportMemo(base, memoPath, 1, &oo, func(string) {})
	if err != nil {
		b.Fatal(err)
	}
	if err := WriteMemo(memoPath, 1, r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, oo))); err != nil {
		b.Fatal(err)
	}
	oo = o
	r, err = ReadExportMemo(next, memoPath, 1, &oo, func(string) {})
	if err != nil || r.Reason != "" {
		b.Fatal(err, r.Reason)
	}
	body := r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, oo))
	if body == nil {
		b.Fatal("no memo")
	}
	b.ResetTimer()
	for range b.N {
		pm, err := StartMemo(filepath.Join(dir, "next-memo"), body)
		if err != nil {
			b.Fatal(err)
		}
		pm.Abort()
	}
}
