// Package topk keeps the heaviest keys of an unbounded stream in a fixed
// number of entries: the space-saving algorithm (Metwally, Agrawal and El
// Abbadi, 2005) over a min-heap, so each count costs O(log capacity).
//
// A Summary never holds more than its capacity, whatever the number of
// distinct keys. Two ways to treat a key that arrives when it is full:
//
//   - Inherit (space-saving): the key replaces the smallest entry and takes
//     its count as its error. Every key counted more than total/capacity
//     times is in the summary, and Count-Err <= true count <= Count. The
//     counts of all entries add up to the total.
//   - Exact: the key replaces the smallest entry only when it brings at
//     least as many as that entry has; the loser (the old entry or the
//     newcomer) is handed back, so the caller can account for it. Counts in
//     the summary are then exact.
package topk

import (
	"cmp"
	"slices"
)

// Entry is one key with its count, the most its count may be overstated
// (Err, Inherit only) and a value the caller keeps with it.
type Entry[K comparable, V any] struct {
	Key   K
	Count uint64
	Err   uint64
	Val   V
}

// Summary is a bounded set of the heaviest keys. It is not safe for
// concurrent use.
type Summary[K comparable, V any] struct {
	capacity int
	inherit  bool
	pos      map[K]int
	heap     []Entry[K, V] // min-heap by Count
}

// New returns a space-saving summary of at most capacity entries.
func New[K comparable, V any](capacity int) *Summary[K, V] {
	return newSummary[K, V](capacity, true)
}

// NewExact returns a summary of at most capacity entries with exact counts
// (see the package documentation).
func NewExact[K comparable, V any](capacity int) *Summary[K, V] {
	return newSummary[K, V](capacity, false)
}

func newSummary[K comparable, V any](capacity int, inherit bool) *Summary[K, V] {
	if capacity < 1 {
		capacity = 1
	}
	return &Summary[K, V]{capacity: capacity, inherit: inherit, pos: map[K]int{}}
}

// Len is the number of entries; it never exceeds Cap.
func (s *Summary[K, V]) Len() int { return len(s.heap) }

// Cap is the most entries the summary holds.
func (s *Summary[K, V]) Cap() int { return s.capacity }

// Add counts n for key; update, when not nil, changes the entry's value
// (a new entry's starts as the zero V). It returns the entry that lost its
// place, if one did: an evicted entry, or (Exact) the newcomer itself when
// it brought less than the smallest entry.
func (s *Summary[K, V]) Add(key K, n uint64, update func(*V)) (lost Entry[K, V], ok bool) {
	if i, found := s.pos[key]; found {
		e := &s.heap[i]
		e.Count += n
		if update != nil {
			update(&e.Val)
		}
		s.down(i)
		return lost, false
	}
	e := Entry[K, V]{Key: key, Count: n}
	if update != nil {
		update(&e.Val)
	}
	if len(s.heap) < s.capacity {
		s.heap = append(s.heap, e)
		s.pos[key] = len(s.heap) - 1
		s.up(len(s.heap) - 1)
		return lost, false
	}
	min := s.heap[0]
	switch {
	case s.inherit:
		e.Count += min.Count
		e.Err = min.Count
	case n < min.Count:
		return e, true
	}
	delete(s.pos, min.Key)
	s.heap[0] = e
	s.pos[key] = 0
	s.down(0)
	return min, true
}

// Top returns the k entries with the highest counts, highest first; ties
// are broken by cmpKey when it is not nil.
func (s *Summary[K, V]) Top(k int, cmpKey func(a, b K) int) []Entry[K, V] {
	out := slices.Clone(s.heap)
	slices.SortFunc(out, func(a, b Entry[K, V]) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 || cmpKey == nil {
			return c
		}
		return cmpKey(a.Key, b.Key)
	})
	if k >= 0 && len(out) > k {
		out = out[:k]
	}
	return out
}

// Reset empties the summary and returns its entries, in no order.
func (s *Summary[K, V]) Reset() []Entry[K, V] {
	out := s.heap
	s.heap = nil
	s.pos = map[K]int{}
	return out
}

func (s *Summary[K, V]) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.pos[s.heap[i].Key] = i
	s.pos[s.heap[j].Key] = j
}

func (s *Summary[K, V]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if s.heap[p].Count <= s.heap[i].Count {
			return
		}
		s.swap(i, p)
		i = p
	}
}

func (s *Summary[K, V]) down(i int) {
	for {
		l, small := 2*i+1, i
		if l < len(s.heap) && s.heap[l].Count < s.heap[small].Count {
			small = l
		}
		if r := l + 1; r < len(s.heap) && s.heap[r].Count < s.heap[small].Count {
			small = r
		}
		if small == i {
			return
		}
		s.swap(i, small)
		i = small
	}
}
