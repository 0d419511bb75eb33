//go:build linux

package learn

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
)

// slotMaps are the two slot maps of ProbeOptions.UDPAtEgress: an
// unconnected UDP socket's repeats of its flow are counted in a slot of
// the installed one (see struct slot in bpf/egress.c), swapped and read
// whole at every drain, like the flow map.
type slotMaps struct {
	swappedMaps        // in the programs' slots
	gen         uint64 // of the active map
	size        uint32
	keys        []uint32
	vals, zeros []bpf.EgressSlot
}

// slotChunk is how many slots a drain reads or clears in one system call.
const slotChunk = 512

// newSlotMaps makes the two maps and installs the first in outer.
func newSlotMaps(spec *ebpf.MapSpec, outer *ebpf.Map) (s *slotMaps, err error) {
	s = &slotMaps{size: spec.MaxEntries, gen: 1,
		keys: make([]uint32, slotChunk),
		vals: make([]bpf.EgressSlot, slotChunk), zeros: make([]bpf.EgressSlot, slotChunk)}
	first := func(m *ebpf.Map) error { return m.Put(uint32(0), bpf.EgressSlot{Gen: s.gen}) }
	if s.swappedMaps, err = newSwappedMaps(spec, outer, "slot map", first); err != nil {
		return nil, err
	}
	return s, nil
}

// drain installs the spare map (a new generation) and passes the counts
// of every slot of the drained one that counted hits to fn, then clears
// the slots taken so the map can be the next spare. The kernel waits for
// the programs still running on the old map before the swap returns (as
// for the flow map): no hit is missed or read twice.
func (s *slotMaps) drain(fn func(*bpf.EgressCounting)) error {
	if err := s.spare.Put(uint32(0), bpf.EgressSlot{Gen: s.gen + 1}); err != nil {
		return fmt.Errorf("prepare slot map: %w", err)
	}
	drained, err := s.swap()
	if err != nil {
		return err
	}
	s.gen++
	var h bpf.EgressSlot
	if err := drained.Lookup(uint32(0), &h); err != nil {
		return fmt.Errorf("read slot map: %w", err)
	}
	taken := uint32(min(h.C.Hits, uint64(s.size-1))) // slots 1..taken
	// Read from slot 0 in chunks of slotChunk, one system call each,
	// until past the slots taken.
	var cursor ebpf.MapBatchCursor
	for next := uint32(0); next <= taken; {
		n, err := drained.BatchLookup(&cursor, s.keys, s.vals, nil)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("read slot map: %w", err)
		}
		m := 0 // slots 0..taken of this chunk
		for m < n && s.keys[m] <= taken {
			if v := &s.vals[m]; s.keys[m] > 0 && v.Gen == h.Gen && v.C.Hits > 0 {
				fn(&v.C)
			}
			m++
		}
		if m > 0 {
			// Slot 0 too: it is written again before the map is installed.
			if _, err := drained.BatchUpdate(s.keys[:m], s.zeros[:m], nil); err != nil {
				return fmt.Errorf("clear slot map: %w", err)
			}
		}
		if n == 0 || err != nil {
			break // the end of the map
		}
		next += uint32(n)
	}
	return nil
}
