package baseline

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestMergeReusingTheExport: ReadFleet's merge, which takes a single
// export's flows as they are, gives what Merge gives (retired flows left
// out, approvals cleared, key order).
func TestMergeReusingTheExport(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	var flows []store.Flow
	for i := range 50 {
		f := store.Flow{FlowKey: store.FlowKey{UID: uint32(50 - i), Proto: 6, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Port: 443},
			Hits: uint64(i + 1), FirstSeen: t0, LastSeen: t0, Hostnames: []string{"a.example"}, Approval: store.Approval{Approved: 2, ApprovedAt: t0}}
		if i%7 == 3 {
			f.Approval = store.Approval{Retired: t0.Add(time.Hour)}
		}
		flows = append(flows, f)
	}
	for _, sorted := range []bool{false, true} {
		in := slices.Clone(flows)
		if sorted {
			slices.SortFunc(in, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
		}
		want := Merge([]*store.Export{{Host: "h1", Exported: t0, Flows: slices.Clone(in)}})
		got := merge([]*store.Export{{Host: "h1", Exported: t0, Flows: in}}, true)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("sorted %v: reusing the export's flows:\n got  %+v\n want %+v", sorted, got.Flows, want.Flows)
		}
		if len(got.Flows) != 43 {
			t.Fatalf("%d flows, want 43 (7 retired)", len(got.Flows))
		}
	}
}
