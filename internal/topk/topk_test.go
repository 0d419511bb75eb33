package topk

import (
	"cmp"
	"math/rand/v2"
	"testing"
)

// TestSpaceSavingFindsHeavyKeysInBoundedSpace: a million distinct keys and
// a few heavy ones; the summary stays at its capacity, finds the heavy
// keys with counts that bracket the truth, and its counts add up to the
// total.
func TestSpaceSavingFindsHeavyKeysInBoundedSpace(t *testing.T) {
	s := New[uint32, struct{}](256)
	rng := rand.New(rand.NewPCG(1, 2))
	truth := map[uint32]uint64{}
	var total uint64
	for i := range 1_000_000 {
		k := uint32(1000 + i) // each once
		if i%10 == 0 {
			k = uint32(rng.IntN(5)) // five heavy keys: 20,000 each
		}
		s.Add(k, 1, nil)
		if k < 5 {
			truth[k]++
		}
		total++
		if s.Len() > s.Cap() {
			t.Fatalf("%d entries, capacity %d", s.Len(), s.Cap())
		}
	}
	top := s.Top(5, cmp.Compare[uint32])
	var sum uint64
	for _, e := range s.Top(-1, nil) {
		sum += e.Count
	}
	if sum != total {
		t.Errorf("counts add up to %d, total %d", sum, total)
	}
	for _, e := range top {
		tr, ok := truth[e.Key]
		if !ok {
			t.Errorf("%d is in the top 5, not a heavy key", e.Key)
			continue
		}
		if e.Count < tr || e.Count-e.Err > tr {
			t.Errorf("key %d: count %d (err %d), truth %d", e.Key, e.Count, e.Err, tr)
		}
	}
}

// TestExactKeepsCountsAndHandsBackTheLoser: exact counts; a newcomer
// lighter than every entry is refused, a heavier one evicts the smallest.
func TestExactKeepsCountsAndHandsBackTheLoser(t *testing.T) {
	s := NewExact[string, int](2)
	s.Add("a", 5, func(v *int) { *v = 1 })
	s.Add("b", 3, nil)
	if lost, ok := s.Add("c", 1, nil); !ok || lost.Key != "c" || lost.Count != 1 {
		t.Errorf("a light newcomer: lost %+v %v, want c refused", lost, ok)
	}
	if lost, ok := s.Add("d", 4, nil); !ok || lost.Key != "b" || lost.Count != 3 {
		t.Errorf("a heavier newcomer: lost %+v %v, want b evicted", lost, ok)
	}
	top := s.Top(-1, nil)
	if len(top) != 2 || top[0].Key != "a" || top[0].Count != 5 || top[0].Val != 1 || top[1].Key != "d" || top[1].Err != 0 {
		t.Errorf("entries %+v", top)
	}
	if out := s.Reset(); len(out) != 2 || s.Len() != 0 {
		t.Errorf("reset gave %d, left %d", len(out), s.Len())
	}
}
