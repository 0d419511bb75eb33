package baseline

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestMergeOfOneExport: the short way for a single export (distinct flows,
// in any order) gives what adding up gives: the flows in key order without
// approvals and retired flows, one host each, and the warnings; an export
// with a flow twice takes the long way and adds it up.
func TestMergeOfOneExport(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	flow := func(uid uint32, ip string, port uint16, hits uint64) store.Flow {
		return store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port}, Hits: hits,
			FirstSeen: t0, LastSeen: t0, Hostnames: []string{"a.example"}, Approval: store.Approval{Approved: 3, ApprovedAt: t0}}
	}
	retired := flow(9, "192.0.2.9", 9, 1)
	retired.Approval = store.Approval{Retired: t0.Add(time.Hour)}
	e := &store.Export{Host: "h1", Exported: t0, Users: map[uint32]string{1: "alice", 2: "alice"},
		Flows: []store.Flow{flow(2, "2001:db8::1", 443, 5), flow(1, "192.0.2.2", 80, 1), retired, flow(1, "192.0.2.1", 443, 2)}}
	got, want := Merge([]*store.Export{e}), mergeFlows([]*store.Export{e})
	want.Warnings = uidWarnings([]*store.Export{e})
	for _, f := range got.Flows { // every flow has the one host
		if !reflect.DeepEqual(want.Hosts[f.FlowKey], got.AllHosts) {
			t.Errorf("flow %v: hosts %v, want %v", f.FlowKey, got.AllHosts, want.Hosts[f.FlowKey])
		}
	}
	want.Hosts, want.AllHosts = nil, got.AllHosts
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("one export:\n got  %+v\n want %+v", got, want)
	}
	if len(got.Warnings) != 1 || len(got.Flows) != 3 || got.Flows[0].Approved != 0 {
		t.Errorf("flows %+v, warnings %v: want 3 flows without approval and alice's two UIDs", got.Flows, got.Warnings)
	}
	e.Flows = append(e.Flows, flow(1, "192.0.2.1", 443, 40))
	m := Merge([]*store.Export{e})
	if len(m.Flows) != 3 || m.Flows[0].Hits != 42 {
		t.Errorf("a flow twice: %+v, want its hits added up (42)", m.Flows)
	}
}

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
