//go:build linux

package learn

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
)

// lastFlowMaps are the two maps of per-CPU last-flow entries (struct
// last_flow in bpf/egress.c): each CPU counts the repeats of the first
// flow it counts in a drain interval at connect and sendmsg in its entry
// of the installed map. A drain swaps them, like the flow map, and reads
// every CPU's entry of the one swapped out.
type lastFlowMaps struct {
	swappedMaps                      // in the programs' last_flows
	vals, zeros []bpf.EgressLastFlow // one per possible CPU
}

// Entry states, as in bpf/egress.c.
const lastReady = 2

// newLastFlowMaps makes the two maps and installs the first in outer.
func newLastFlowMaps(spec *ebpf.MapSpec, outer *ebpf.Map) (l *lastFlowMaps, err error) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count the possible CPUs: %w", err)
	}
	l = &lastFlowMaps{vals: make([]bpf.EgressLastFlow, cpus), zeros: make([]bpf.EgressLastFlow, cpus)}
	if l.swappedMaps, err = newSwappedMaps(spec, outer, "last-flow map", nil); err != nil {
		return nil, err
	}
	return l, nil
}

// drain installs the spare map and passes the counts of every entry of
// the drained one that counted hits to fn, then clears it so it can be
// the next spare. The kernel waits for the programs still running on the
// old map before the swap returns: no hit is missed or read twice.
func (l *lastFlowMaps) drain(fn func(*bpf.EgressCounting)) error {
	drained, err := l.swap()
	if err != nil {
		return err
	}
	if err := drained.Lookup(uint32(0), l.vals); err != nil {
		return fmt.Errorf("read last-flow map: %w", err)
	}
	for i := range l.vals {
		if v := &l.vals[i]; v.State == lastReady && v.C.Hits > 0 {
			fn(&v.C)
		}
	}
	if err := drained.Put(uint32(0), l.zeros); err != nil {
		return fmt.Errorf("clear last-flow map: %w", err)
	}
	return nil
}
