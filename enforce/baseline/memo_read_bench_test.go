package baseline

import (
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// lookupName names a user as config.UserNames does (os/user, the UID
// itself when there is no such user), without its cache.
func lookupName(uid uint32) string {
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		return u.Username
	}
	return n
}

// benchFlows makes n flows as applybench's exports hold them
// (plantest.SynthFlows): 40 users, 1 in 10 addresses IPv6, a hostname of its
// own for most flows (so about as many name rules as flows).
func benchFlows(n int) []store.Flow { return plantest.SynthFlows(n, memoNow, true) }

// BenchmarkReadMemo100k reads and decodes the memo of a 100,000-flow
// export, its users named through os/user as the CLI names them (the
// memo's read on a delta's critical path: loadMemo), and reports the
// CPU time of a read beside its wall time.
func BenchmarkReadMemo100k(b *testing.B) {
	flows := benchFlows(100_000)
	dir := b.TempDir()
	export, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
	writeMemoExport(b, export, flows, true)
	o := memoOptions(plan.FollowBoth, "")
	o.UserName = config.UserNames{}.Name // cached: the memo's users are named once
	oo := o
	r, err := ReadExportMemo(export, memoPath, 1, &oo, func(string) {})
	if err != nil {
		b.Fatal(err)
	}
	if err := WriteMemo(memoPath, 1, r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, oo))); err != nil {
		b.Fatal(err)
	}
	fp, err := optionsPrint(&o)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		m, _, why := readMemo(memoPath, fp, lookupName)
		if m == nil {
			b.Fatal(why)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
}
