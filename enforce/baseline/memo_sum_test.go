package baseline

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestExportMemoSameLengthChange: the memo keeps each flow's length and
// keyed sum, not its bytes; a flow changed in place, to bytes of the same
// length at the same position, is still read again, and the plan is the
// full path's (which differs from the plan before). The memo is the
// owner's alone (0600: its key is a secret). The memo is written in
// chunks here.
func TestExportMemoSameLengthChange(t *testing.T) {
	chunk := memoChunk
	memoChunk = 100 // the memo written in many chunks
	t.Cleanup(func() { memoChunk = chunk })
	rng := rand.New(rand.NewPCG(11, 11))
	flows := memoFlows(rng, 1500)
	slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	o := memoOptions(plan.FollowBoth, "")
	dir := t.TempDir()
	export, memoPath := filepath.Join(dir, "export.json"), filepath.Join(dir, "memo")
	// A plain flow with a name the plan follows (a name rule of its own).
	at := slices.IndexFunc(flows, func(f store.Flow) bool {
		return f.IP.Is4() && f.Port == 443 && f.Hits >= 3 && f.Retired.IsZero() && f.Approved == 0 &&
			slices.Equal(f.Hostnames, []string{"a.example.org", "b0.example.org"})
	})
	if at < 0 {
		t.Fatal("no flow to change")
	}
	writeMemoExport(t, export, flows, false)
	before, _ := fullPlan(t, export, o)
	memoPlan(t, export, memoPath, 1, o)
	if st, err := os.Stat(memoPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("memo %v, %v: want mode 0600", st, err)
	}
	old, _ := os.ReadFile(export)
	flows[at].Hostnames = []string{"a.example.org", "b9.example.org"}
	writeMemoExport(t, export, flows, false)
	now, _ := os.ReadFile(export)
	if len(now) != len(old) {
		t.Fatalf("the change moved the bytes: %d, was %d", len(now), len(old))
	}
	r := memoPlan(t, export, memoPath, 1, o) // the plan is the full path's
	if r.Reason != "" || r.Reused < 1000 {
		t.Fatalf("the memo was not used: reason %q, %d reused", r.Reason, r.Reused)
	}
	if after, _ := fullPlan(t, export, o); string(after) == string(before) {
		t.Fatal("the change does not change the plan: the test shows nothing")
	}
}

// TestExportMemoDuplicateKeys: an export whose flows repeat a key, or
// are out of order, is read whole as ReadFleet reads it (merge merges
// flows of one key): the plan is the full path's, and no memo is made.
func TestExportMemoDuplicateKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	flows := memoFlows(rng, 600)
	slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	at := slices.IndexFunc(flows, func(f store.Flow) bool { return f.IP.Is4() && f.Port == 443 && f.Hits >= 3 && f.Approved == 0 })
	dup := flows[at]
	dup.Hits, dup.Hostnames = 99, []string{"dup.example.org"}
	flows = slices.Insert(flows, at+1, dup)
	dir := t.TempDir()
	export, memoPath := filepath.Join(dir, "export.json"), filepath.Join(dir, "memo")
	writeMemoExport(t, export, flows, false)
	memoPlan(t, export, memoPath, 1, memoOptions(plan.FollowBoth, "")) // the plan is the full path's
	if _, err := os.Stat(memoPath); !os.IsNotExist(err) {
		t.Fatalf("a memo of an export with a key twice: %v", err)
	}
}
