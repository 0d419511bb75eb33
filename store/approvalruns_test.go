package store

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestApprovalsOfRuns: the keys of runs (a plan's sets, each in
// FlowKey.Compare's order) come out in the store's order, duplicates
// kept, whether they merge as they are (a protocol per UID) or by
// protocol (a UID with TCP and UDP flows: the store orders by protocol
// before the address), or must be sorted (a run in no order).
func TestApprovalsOfRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	key := func(v6, mixed bool) FlowKey {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(256))})
		if v6 {
			ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(rng.IntN(256))})
			if rng.IntN(4) == 0 {
				ip = netip.AddrFrom16([16]byte{15: byte(rng.IntN(256))}) // before the mapped IPv4 ones
			}
		}
		uid := uint32(rng.IntN(5))
		proto := uint8(6 + 11*(uid%2)) // one protocol per UID
		if mixed {
			proto = []uint8{6, 17}[rng.IntN(2)]
		}
		return FlowKey{UID: uid, Proto: proto, IP: ip, Port: uint16(rng.IntN(3))}
	}
	merged, byProto := 0, 0
	for n := range 120 {
		for _, mixed := range []bool{false, true} {
			var sets [][]FlowKey
			for s := range 2 + n%2 { // an empty third run sometimes
				keys := make([]FlowKey, 0, n)
				for range n * (1 - s/2) {
					keys = append(keys, key(s == 1, mixed))
				}
				slices.SortFunc(keys, FlowKey.Compare)
				sets = append(sets, keys)
			}
			var runs []KeyRun
			var want [][]byte
			for _, keys := range sets {
				runs = append(runs, KeyRun{N: len(keys), Key: func(i int) FlowKey { return keys[i] }})
				for _, k := range keys {
					want = append(want, k.bytes())
				}
			}
			slices.SortFunc(want, bytes.Compare)
			a := NewApprovalsOfRuns(runs, nil)
			switch _, ok := mergeRuns(runs); {
			case a.raw != nil:
				t.Fatalf("%d keys a run (mixed %v): sorted, not merged", n, mixed)
			case ok:
				merged++
			default:
				byProto++
			}
			if a.len() != len(want) {
				t.Fatalf("%d keys, want %d", a.len(), len(want))
			}
			for i := range want {
				if !bytes.Equal(a.key(i), want[i]) {
					t.Fatalf("%d keys a run (mixed %v): key %d not in the store's order", n, mixed, i)
				}
			}
		}
	}
	if merged == 0 || byProto == 0 {
		t.Fatalf("merged %d, by protocol %d: both ways must be tried", merged, byProto)
	}
	// A run in no order at all is sorted.
	keys := []FlowKey{{UID: 2, Proto: 6, IP: netip.MustParseAddr("10.0.0.2")}, {UID: 1, Proto: 6, IP: netip.MustParseAddr("10.0.0.1")}}
	a := NewApprovalsOfRuns([]KeyRun{{N: 2, Key: func(i int) FlowKey { return keys[i] }}}, nil)
	if a.len() != 2 || !bytes.Equal(a.key(0), keys[1].bytes()) || !bytes.Equal(a.key(1), keys[0].bytes()) {
		t.Fatal("a run in no order is not sorted")
	}
}
