//go:build linux

package learn

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// swappedMaps are two maps of one spec that take turns in slot 0 of an
// outer ARRAY_OF_MAPS of the programs: they count in the installed one
// (active) while a drain reads the one swapped out (spare).
type swappedMaps struct {
	outer         *ebpf.Map
	active, spare *ebpf.Map
	what          string // the maps, in errors ("slot map")
}

// newSwappedMaps makes the two maps and installs the first in outer,
// after first (when not nil) has prepared it.
func newSwappedMaps(spec *ebpf.MapSpec, outer *ebpf.Map, what string, first func(*ebpf.Map) error) (m swappedMaps, err error) {
	m = swappedMaps{outer: outer, what: what}
	if m.active, err = ebpf.NewMap(spec); err != nil {
		return m, fmt.Errorf("create %s: %w", what, err)
	}
	if m.spare, err = ebpf.NewMap(spec); err != nil {
		m.active.Close()
		return m, fmt.Errorf("create %s: %w", what, err)
	}
	if first != nil {
		err = first(m.active)
	}
	if err == nil {
		err = outer.Put(uint32(0), m.active)
	}
	if err != nil {
		m.close()
		return m, fmt.Errorf("install %s: %w", what, err)
	}
	return m, nil
}

func (m *swappedMaps) close() error {
	return errors.Join(m.active.Close(), m.spare.Close())
}

// swap installs the spare map and returns the one it replaces, the next
// spare. The kernel waits for the programs still running on the old map
// before the swap returns: no count is missed or lands in it after.
func (m *swappedMaps) swap() (*ebpf.Map, error) {
	if err := m.outer.Put(uint32(0), m.spare); err != nil {
		return nil, fmt.Errorf("swap %s: %w", m.what, err)
	}
	m.active, m.spare = m.spare, m.active
	return m.spare, nil
}
