package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

// diffBoth diffs data against the earlier export old both ways (in
// halves, and in one go): they must give the same refs and header, or
// both fail; it returns how the halves went.
func diffBoth(t *testing.T, old, data []byte) string {
	t.Helper()
	var oe Export
	spans, err := DecodeExportSpans(old, &oe)
	if err != nil || spans == nil {
		t.Fatalf("the earlier export: %v", err)
	}
	key := [32]byte{7}
	s := NewFlowSummer(key)
	lens, sums, keys := make([]int32, len(spans)), make([]FlowSum, len(spans)), make([]FlowKey, len(spans))
	for i, sp := range spans {
		lens[i], sums[i] = sp.End-sp.Start, s.Sum(old[sp.Start:sp.End])
		keys[i] = oe.Flows[i].FlowKey
		keys[i].IP = keys[i].IP.Unmap()
	}
	var halvesE, oneE Export
	halves := diffExport(data, NewFlowSummer(key), lens, sums, keys, &halvesE)
	diffInHalves = false
	one := diffExport(data, NewFlowSummer(key), lens, sums, keys, &oneE)
	diffInHalves = true
	if (halves == nil) != (one == nil) {
		t.Fatalf("in halves: %v, in one go: %v", halves != nil, one != nil)
	}
	if one == nil {
		return "failed"
	}
	if !reflect.DeepEqual(halvesE, oneE) {
		t.Fatal("the headers differ")
	}
	if len(halves.refs) != len(one.refs) {
		t.Fatalf("%d refs in halves, %d in one go", len(halves.refs), len(one.refs))
	}
	for i := range one.refs {
		a, b := halves.refs[i], one.refs[i]
		if a.Span != b.Span || a.Old != b.Old || (a.Flow == nil) != (b.Flow == nil) || a.Flow != nil && !reflect.DeepEqual(*a.Flow, *b.Flow) {
			t.Fatalf("ref %d: in halves %+v, in one go %+v", i, a, b)
		}
	}
	return halves.halves
}

// TestDiffExportInHalves: DiffExport reads a large export's flows in two
// halves on two cores, and gives what reading them in one go gives,
// whatever changed around the place it cuts: flows changed, removed and
// added before and after it (the second half then started from the wrong
// earlier flow, and is read again from the cut), a cut inside a string,
// flows out of order across the cut, a broken export.
func TestDiffExportInHalves(t *testing.T) {
	names := func(i int) []string { return []string{fmt.Sprintf("svc%d.example.net", i)} }
	const n = 6000
	var e Export
	if err := json.Unmarshal(bigExport(t, n, names), &e); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(e.Flows, func(a, b Flow) int { return a.FlowKey.Compare(b.FlowKey) }) // as egress-learn writes them
	encode := func(flows []Flow) []byte {
		c := e
		c.Flows = flows
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	old := encode(e.Flows)
	if how := diffBoth(t, old, old); how != "joined" {
		t.Fatalf("the same export: halves %q, want joined", how)
	}
	seen := map[string]bool{}
	for at := n/2 - 6; at <= n/2+6; at++ {
		changed := slices.Clone(e.Flows)
		changed[at].Hits += 1000
		seen[diffBoth(t, old, encode(changed))] = true

		removed := slices.Delete(slices.Clone(e.Flows), at, at+1)
		seen[diffBoth(t, old, encode(removed))] = true

		removed3 := slices.Delete(slices.Clone(e.Flows), at, at+3)
		seen[diffBoth(t, old, encode(removed3))] = true

		added := slices.Clone(e.Flows)
		f := added[at]
		f.Port++ // between at and at+1 in key order
		added = slices.Insert(added, at+1, f)
		seen[diffBoth(t, old, encode(added))] = true

		swapped := slices.Clone(e.Flows)
		swapped[at], swapped[at+1] = swapped[at+1], swapped[at]
		seen[diffBoth(t, old, encode(swapped))] = true

		cutInString := slices.Clone(e.Flows)
		cutInString[at].Hostnames = []string{"a},{\"uid\":1,x.example.net"}
		seen[diffBoth(t, old, encode(cutInString))] = true
	}
	// (A cut inside a string is not tried: no flow can start there, the
	// fast reader reading no escapes.)
	for _, how := range []string{"joined", "from the cut", "failed"} {
		if !seen[how] {
			t.Errorf("no change near the cut made the halves go %q (saw %v)", how, seen)
		}
	}
	// Flows out of order right at the cut; mapped addresses; a broken end.
	moved := slices.Clone(e.Flows)
	moved[n/2].IP = netip.AddrFrom4([4]byte{1, 1, 1, 1})
	diffBoth(t, old, encode(moved))
	mapped := slices.Clone(e.Flows)
	for i := range mapped {
		mapped[i].IP = netip.AddrFrom16(mapped[i].IP.As16())
	}
	diffBoth(t, old, encode(mapped))
	diffBoth(t, old, old[:len(old)-3])
	diffBoth(t, old, old[:len(old)/2+100])
}
