package baseline

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// mapNames names users through a map it fills, as config.UserNames does:
// not safe for concurrent use (go test -race tells).
func mapNames() func(uint32) string {
	m := map[uint32]string{}
	return func(uid uint32) string {
		if n, ok := m[uid]; ok {
			return n
		}
		n := "u" + string(rune('a'+uid%26))
		m[uid] = n
		return n
	}
}

// TestExportMemoWholeReadLarge: a whole read of a larger export gives the
// full path's plan and warnings, in order, with a user-naming function
// that is not safe for concurrent use (the reads beside it, the export's
// and the memo's, must not call it); the next read against its memo too.
func TestExportMemoWholeReadLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	flows := memoFlows(rng, 9000)
	dir := t.TempDir()
	base, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
	writeMemoExport(t, base, flows[:8000], true)
	o := memoOptions(plan.FollowBoth, "")
	o.UserName = mapNames()
	if r := memoPlan(t, base, memoPath, 1, o); r.Reason == "" {
		t.Fatal("the first read used a memo")
	}
	next := filepath.Join(dir, "next.json")
	writeMemoExport(t, next, slices.Concat(flows[:3000], flows[3100:8000], flows[8000:8100]), true)
	o.UserName = mapNames()
	if r := memoPlan(t, next, memoPath, 1, o); r.Reason != "" || r.Reused < 6000 {
		t.Fatalf("the memo was not used: reason %q, %d reused", r.Reason, r.Reused)
	}
}

// TestExportMemoWholeReadFirstError: two bad flows in a whole read: the
// error names the first one (and the export's bytes, released when the
// read returns, are no longer read by the sums beside it).
func TestExportMemoWholeReadFirstError(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	flows := memoFlows(rng, 6000)
	slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	flows[1000].Proto, flows[5000].Proto = 0, 0
	path := filepath.Join(t.TempDir(), "bad.json")
	writeMemoExport(t, path, flows, false)
	o := memoOptions("", "")
	_, err := ReadExportMemo(path, "", 0, &o, func(string) {})
	if err == nil || !strings.Contains(err.Error(), "flow #1001 ") {
		t.Fatalf("error %v, want one about flow #1001", err)
	}
}

// TestExportMemoGenerationAskedOnce: the generation is asked once, after
// the memo is read; a memo of another generation, a damaged one and one
// when no table was applied are not used, and the plan is the full
// path's.
func TestExportMemoGenerationAskedOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 23))
	flows := memoFlows(rng, 3000)
	dir := t.TempDir()
	base, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
	writeMemoExport(t, base, flows, true)
	o := memoOptions("", "")
	memoPlan(t, base, memoPath, 4, o)
	for _, c := range []struct {
		name   string
		gen    uint64
		damage bool
		why    string
	}{
		{"same", 4, false, ""},
		{"stale", 5, false, "the memo is of generation 4, the table is generation 5"},
		{"no table", 0, false, noTable},
		{"damaged", 4, true, "damaged"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.damage {
				b, err := os.ReadFile(memoPath)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x40
				if err := os.WriteFile(memoPath, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var asked atomic.Int32
			oo := o
			r, err := ReadExportMemoOf(base, memoPath, func() uint64 { asked.Add(1); return c.gen }, &oo, func(string) {})
			if err != nil {
				t.Fatal(err)
			}
			if asked.Load() != 1 {
				t.Fatalf("the generation was asked %d times", asked.Load())
			}
			if c.why == "" && r.Reason != "" || c.why != "" && !strings.Contains(r.Reason, c.why) {
				t.Fatalf("reason %q, want %q", r.Reason, c.why)
			}
			want, _ := fullPlan(t, base, o)
			if got := planJSON(t, plan.BuildWith(r.Merged.Flows, r.Plain, oo)); string(got) != string(want) {
				t.Fatalf("not the full path's plan:\n%s", firstDiff(got, want))
			}
		})
	}
}

// TestExportMemoMissingExport: an export that cannot be read is an error,
// whatever the memo.
func TestExportMemoMissingExport(t *testing.T) {
	o := memoOptions("", "")
	_, err := ReadExportMemoOf(filepath.Join(t.TempDir(), "none.json"), "", func() uint64 { return 1 }, &o, func(string) {})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v, want one that is os.ErrNotExist", err)
	}
}
