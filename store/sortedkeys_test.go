package store

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestSortedKeys: the keys of an approval come out in the store's order
// whatever order they come in (two sorted runs, as a plan's two sets give
// them, or none), duplicates kept.
func TestSortedKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	key := func() FlowKey {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(256))})
		if rng.IntN(3) == 0 {
			ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(rng.IntN(256))})
		}
		return FlowKey{UID: uint32(rng.IntN(5)), Proto: []uint8{6, 17}[rng.IntN(2)], IP: ip, Port: uint16(rng.IntN(3))}
	}
	for n := range 200 {
		keys := make([]FlowKey, n)
		for i := range keys {
			keys[i] = key()
		}
		byStore := func(a, b FlowKey) int { return bytes.Compare(a.bytes(), b.bytes()) }
		for _, order := range []string{"random", "sorted", "two runs"} {
			switch order {
			case "sorted":
				slices.SortFunc(keys, byStore)
			case "two runs":
				slices.SortFunc(keys[:n/3], byStore)
				slices.SortFunc(keys[n/3:], byStore)
			}
			want := make([][]byte, n)
			for i, k := range keys {
				want[i] = k.bytes()
			}
			slices.SortFunc(want, bytes.Compare)
			if got := sortedKeys(keys); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("%d keys, %s: not in the store's order", n, order)
			}
		}
	}
}
