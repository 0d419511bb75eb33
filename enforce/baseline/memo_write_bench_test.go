package baseline

import (
	"path/filepath"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// BenchmarkWriteMemo100k writes the next memo of a 100,000-flow export
// changed in 200 flows, read against the memo of the one before: most
// of its records are the old memo's.
func BenchmarkWriteMemo100k(b *testing.B) {
	dir, next, memoPath, o := memoBench100k(b)
	oo := o
	r, err := ReadExportMemo(next, memoPath, 1, &oo, func(string) {})
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
