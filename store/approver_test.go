package store

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestApproveManyRecords: approving flows the store does not have writes
// each one whole, across the approver's slabs (ten thousand records of
// about 250 bytes are a few megabytes), a record larger than what is left
// of a slab included, and a second approval rewrites only the approval.
func TestApproveManyRecords(t *testing.T) {
	st, err := Create(filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	want := map[FlowKey]Flow{}
	var keys []FlowKey
	for i := range 10000 {
		k := FlowKey{UID: uint32(i % 7), Proto: 6, IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 443}
		f := Flow{FlowKey: k, Hits: uint64(i), FirstSeen: t0, LastSeen: t0.Add(time.Duration(i) * time.Second),
			Hostnames: []string{fmt.Sprintf("h%d.example", i)}, Processes: []string{"/usr/bin/curl"},
			Approval: Approval{Approved: 1, ApprovedAt: t0, ApprovedNames: []string{fmt.Sprintf("h%d.example", i)}}}
		if i%1000 == 999 { // larger than a slab's reserve
			f.Hostnames = []string{strings.Repeat("x", 3000) + ".example", strings.Repeat("y", 3000) + ".example"}
		}
		want[k] = f
		keys = append(keys, k)
	}
	fill := func(f *Flow) { *f = want[f.FlowKey] }
	if err := st.SetApproval(keys, fill); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		got, err := st.Flows()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d flows, want %d", when, len(got), len(want))
		}
		for _, f := range got {
			if w := want[f.FlowKey]; !reflect.DeepEqual(f, w) {
				t.Fatalf("%s: flow %v:\n got  %+v\n want %+v", when, f.FlowKey, f, w)
			}
		}
	}
	check("first approval")
	for i, k := range keys {
		if i%3 == 0 {
			f := want[k]
			f.Approved = 2
			want[k] = f
		}
	}
	if err := st.SetApproval(keys, func(f *Flow) { f.Approval = want[f.FlowKey].Approval }); err != nil {
		t.Fatal(err)
	}
	check("second approval")
}
