package baseline

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// memoBench100k writes, in a temporary directory, a 100,000-flow export
// and its memo, and the export that follows it, changed in 200 flows: the
// next export's path, the memo's and the options both are read with.
func memoBench100k(b *testing.B) (dir, next, memoPath string, o plan.Options) {
	rng := rand.New(rand.NewPCG(1, 1))
	flows := memoFlows(rng, 100_200)
	dir = b.TempDir()
	base := filepath.Join(dir, "base.json")
	next, memoPath = filepath.Join(dir, "next.json"), filepath.Join(dir, "memo")
	writeMemoExport(b, base, flows[:100_000], true)
	writeMemoExport(b, next, slices.Concat(flows[100:100_000], flows[100_000:]), true)
	o = memoOptions(plan.FollowBoth, "")
	o.UserName = nil
	oo := o
	r, err := ReadExportMemo(base, memoPath, 1, &oo, func(string) {})
	if err != nil {
		b.Fatal(err)
	}
	if err := WriteMemo(memoPath, 1, r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, oo))); err != nil {
		b.Fatal(err)
	}
	return dir, next, memoPath, o
}

// BenchmarkReadExportMemo100k reads a 100,000-flow export changed in 200
// flows against the memo of the one before, and builds its plan.
func BenchmarkReadExportMemo100k(b *testing.B) {
	_, next, memoPath, o := memoBench100k(b)
	b.ResetTimer()
	for range b.N {
		oo := o
		r, err := ReadExportMemo(next, memoPath, 1, &oo, func(string) {})
		if err != nil || r.Reason != "" {
			b.Fatal(err, r.Reason)
		}
		plan.BuildWith(r.Merged.Flows, r.Plain, oo)
	}
}
