//go:build linux

package learn

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// lastFlowMaps are the two maps of per-CPU last-flow entries (struct
// last_flow in bpf/egress.c): each CPU counts the repeats of the first
// flow it counts in a drain interval at connect and sendmsg in its entry
// of the installed map. A drain swaps them, like the flow map, and reads
// every CPU's entry of the one swapped out.
type lastFlowMaps struct {
	outer         *ebpf.Map // the programs' last_flows (ARRAY_OF_MAPS)
	active, spare *ebpf.Map
	vals, zeros   []bpf.EgressLastFlow // one per possible CPU
}

// Entry states, as in bpf/egress.c.
const lastReady = 2

// newLastFlowMaps makes the two maps and installs the first in outer.
func newLastFlowMaps(spec *ebpf.MapSpec, outer *ebpf.Map) (l *lastFlowMaps, err error) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count the possible CPUs: %w", err)
	}
	l = &lastFlowMaps{outer: outer, vals: make([]bpf.EgressLastFlow, cpus), zeros: make([]bpf.EgressLastFlow, cpus)}
	if l.active, err = ebpf.NewMap(spec); err != nil {
		return nil, fmt.Errorf("create last-flow map: %w", err)
	}
	if l.spare, err = ebpf.NewMap(spec); err != nil {
		l.active.Close()
		return nil, fmt.Errorf("create last-flow map: %w", err)
	}
	if err := outer.Put(uint32(0), l.active); err != nil {
		l.close()
		return nil, fmt.Errorf("install last-flow map: %w", err)
	}
	return l, nil
}

func (l *lastFlowMaps) close() error {
	return errors.Join(l.active.Close(), l.spare.Close())
}

// drain installs the spare map and passes every entry of the drained one
// that counted hits to fn, then clears it so it can be the next spare.
// The kernel waits for the programs still running on the old map before
// the swap returns: no hit is missed or read twice.
func (l *lastFlowMaps) drain(fn func(*bpf.EgressLastFlow)) error {
	if err := l.outer.Put(uint32(0), l.spare); err != nil {
		return fmt.Errorf("swap last-flow map: %w", err)
	}
	drained := l.active
	l.active, l.spare = l.spare, drained
	if err := drained.Lookup(uint32(0), l.vals); err != nil {
		return fmt.Errorf("read last-flow map: %w", err)
	}
	for i := range l.vals {
		if v := &l.vals[i]; v.State == lastReady && v.Hits > 0 {
			fn(v)
		}
	}
	if err := drained.Put(uint32(0), l.zeros); err != nil {
		return fmt.Errorf("clear last-flow map: %w", err)
	}
	return nil
}

// lastFlowAttempt is an entry's hits as an Attempt.
func (p *Probe) lastFlowAttempt(v *bpf.EgressLastFlow, clk *cgroupbpf.MonoClock) Attempt {
	k := &v.Key
	return Attempt{
		CgroupID: k.CgroupId, UID: k.Uid, GID: v.Gid, TGID: v.Tgid, Comm: p.drainNames.get(k.Comm[:]), Exe: p.drainNames.get(v.Exe[:]),
		Proto: k.Proto, IP: addrOf(k.Family, k.Addr), Port: k.Port,
		Hits: v.Hits, First: clk.Wall(v.FirstNs), Last: clk.Wall(v.LastNs),
	}
}
