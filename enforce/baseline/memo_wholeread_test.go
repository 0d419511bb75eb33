package baseline

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// halvesFlows is enough flows for an export that is decoded, and then
// read, in two halves (store's splitFlows: 256 KiB).
const halvesFlows = 8192

// mapNames names users through a map it fills, as config.UserNames does,
// and counts the calls in it: not safe for concurrent use, even once
// every user is named (go test -race tells).
func mapNames() func(uint32) string {
	m := map[uint32]string{}
	calls := map[uint32]int{}
	return func(uid uint32) string {
		calls[uid]++
		if n, ok := m[uid]; ok {
			return n
		}
		n := "u" + string(rune('a'+uid%26))
		m[uid] = n
		return n
	}
}

// TestExportMemoWholeReadLarge: a whole read of a larger export (read in
// two halves at once: decoded in halves) gives the full path's
// plan and warnings, in order, with a user-naming function that is not
// safe for concurrent use (the reads beside it, the export's and the
// memo's, and the second half's, must not call it: go test -race); the
// next read against its memo too.
func TestExportMemoWholeReadLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	flows := memoFlows(rng, 9000+halvesFlows)
	dir := t.TempDir()
	base, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
	writeMemoExport(t, base, flows[:8000+halvesFlows], true)
	o := memoOptions(plan.FollowBoth, "")
	o.UserName = mapNames()
	if r := memoPlan(t, base, memoPath, 1, o); r.Reason == "" {
		t.Fatal("the first read used a memo")
	}
	next := filepath.Join(dir, "next.json")
	writeMemoExport(t, next, slices.Concat(flows[:3000], flows[3100:8000+halvesFlows], flows[8000+halvesFlows:8100+halvesFlows]), true)
	o.UserName = mapNames()
	if r := memoPlan(t, next, memoPath, 1, o); r.Reason != "" || r.Reused < 6000 {
		t.Fatalf("the memo was not used: reason %q, %d reused", r.Reason, r.Reused)
	}
}

// TestExportMemoWholeReadFirstError: bad flows in a whole read, small or
// read in two halves (one bad flow in each, or in the second only): the
// error names the first one (and the export's bytes, released when the
// read returns, are no longer read by the sums beside it).
func TestExportMemoWholeReadFirstError(t *testing.T) {
	for _, c := range []struct{ n, bad1, bad2 int }{{6000, 1000, 5000}, {3 * halvesFlows, 1000, 2*halvesFlows + 7}, {3 * halvesFlows, 2*halvesFlows + 7, 2*halvesFlows + 9}} {
		rng := rand.New(rand.NewPCG(22, 22))
		flows := memoFlows(rng, c.n)
		slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
		flows[c.bad1].Proto, flows[c.bad2].Proto = 0, 0
		path := filepath.Join(t.TempDir(), "bad.json")
		writeMemoExport(t, path, flows, false)
		o := memoOptions("", "")
		_, err := ReadExportMemo(path, "", 0, &o, func(string) {})
		if want := fmt.Sprintf("flow #%d ", c.bad1+1); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%d flows: error %v, want one about %s", c.n, err, want)
		}
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

// TestExportMemoWholeReadNamesOnce: a whole read in two halves names each
// user once, before the halves run (so a naming function that is not
// safe for concurrent use is never called from both at once, without
// -race too), and the elements carry those names.
func TestExportMemoWholeReadNamesOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 23))
	flows := memoFlows(rng, 3*halvesFlows)
	path := filepath.Join(t.TempDir(), "export.json")
	writeMemoExport(t, path, flows, true)
	uids := map[uint32]bool{}
	for _, f := range flows {
		uids[f.UID] = true
	}
	var calls atomic.Int64
	o := memoOptions("", "")
	o.UserName = func(uid uint32) string { calls.Add(1); return fmt.Sprint("n", uid) }
	r, err := ReadExportMemo(path, "", 0, &o, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != int64(len(uids)) {
		t.Errorf("the user names were asked %d times, want once for each of the %d users", n, len(uids))
	}
	for _, e := range slices.Concat(r.Plain.V4, r.Plain.V6) {
		if want := fmt.Sprint("n", e.UID); e.User != want {
			t.Fatalf("element %v is of user %q, want %q", e.IP, e.User, want)
		}
	}
}

// TestKeyOrderAcrossHalves: the key order of an export decoded in halves
// is checked across the halves' boundary too: a key repeated, or out of
// order, where the second half begins sends the read to the plain path
// (merge merges flows of one key), as it would within a half.
func TestKeyOrderAcrossHalves(t *testing.T) {
	f := func(uid uint32, ip string) store.Flow {
		return store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: plan.ProtoTCP, IP: netip.MustParseAddr(ip), Port: 443}}
	}
	a, b, c, d := f(1000, "10.0.0.1"), f(1000, "10.0.0.2"), f(1001, "10.0.0.1"), f(1001, "10.0.0.2")
	for _, tc := range []struct {
		name        string
		first, rest []store.Flow
		want        bool
	}{
		{"in order", []store.Flow{a, b}, []store.Flow{c, d}, true},
		{"one half", []store.Flow{a, b, c, d}, nil, true},
		{"repeated at the boundary", []store.Flow{a, b}, []store.Flow{b, c}, false},
		{"out of order at the boundary", []store.Flow{a, c}, []store.Flow{b, d}, false},
		{"out of order in the second half", []store.Flow{a}, []store.Flow{c, b}, false},
	} {
		if got := keyOrder(tc.first, tc.rest); got != tc.want {
			t.Errorf("%s: keyOrder %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestExportMemoRepeatWhereHalvesMeet: an export (another host's word)
// whose flow where the decoding's second half begins repeats the key of
// the first half's last flow is not read whole in halves, each with its
// element: it goes to the plain path, which merges the two, and the plan
// is the full path's, as with a repeat anywhere else.
func TestExportMemoRepeatWhereHalvesMeet(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 24))
	flows := memoFlows(rng, 2*halvesFlows)
	slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	dir := t.TempDir()
	path := filepath.Join(dir, "export.json")
	firstHalf := func() int {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var e store.Export
		if _, rest, err := store.DecodeExportSpans(data, &e); err != nil || len(rest) == 0 {
			t.Fatalf("the export was not decoded in halves (%v)", err)
		}
		return len(e.Flows)
	}
	writeMemoExport(t, path, flows, false)
	h := firstHalf()
	flows[h] = flows[h-1] // the first half's last flow (a plain one: not retired, 6 hits), twice
	flows[h].Hits++
	writeMemoExport(t, path, flows, false)
	if firstHalf() != h {
		t.Fatal("the halves no longer meet at the repeated key")
	}
	memoPlan(t, path, filepath.Join(dir, "memo"), 1, memoOptions("", ""))
}
