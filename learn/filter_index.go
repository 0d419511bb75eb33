package learn

import (
	"net/netip"
	"slices"
)

// shortFilter is how long the filter's lists may be and still be searched
// at every attempt: the configuration makes them as long as it likes
// (ignore_ports of a range written out: 64k ports), and a search of
// 10k users and 10k ports cost 12 us an attempt.
const shortFilter = 16

// filterIndex is a long filter's lists as sets: the users and ports, and
// the prefixes by length (an attempt looks its address up once per
// length the prefixes of its family have).
type filterIndex struct {
	users    map[uint32]bool
	ports    map[uint16]bool
	prefixes map[netip.Prefix]bool // masked
	bits4    []int                 // the IPv4 prefixes' lengths, each once
	bits6    []int
}

// indexed is f with its lists as sets when one of them is long.
func (f Filter) indexed() Filter {
	if len(f.Users) <= shortFilter && len(f.Ports) <= shortFilter && len(f.Prefixes) <= shortFilter {
		return f
	}
	x := &filterIndex{users: make(map[uint32]bool, len(f.Users)), ports: make(map[uint16]bool, len(f.Ports)),
		prefixes: make(map[netip.Prefix]bool, len(f.Prefixes))}
	for _, u := range f.Users {
		x.users[u] = true
	}
	for _, p := range f.Ports {
		x.ports[p] = true
	}
	for _, p := range f.Prefixes {
		if !p.IsValid() {
			continue // contains nothing
		}
		x.prefixes[p.Masked()] = true
		if p.Addr().Is4() {
			x.bits4 = append(x.bits4, p.Bits())
		} else {
			x.bits6 = append(x.bits6, p.Bits())
		}
	}
	slices.Sort(x.bits4)
	slices.Sort(x.bits6)
	x.bits4, x.bits6 = slices.Compact(x.bits4), slices.Compact(x.bits6)
	f.index = x
	return f
}

// ignored is Filter.Ignored of the lists.
func (x *filterIndex) ignored(uid uint32, ip netip.Addr, port uint16) bool {
	if x.users[uid] || x.ports[port] {
		return true
	}
	if !ip.IsValid() || ip.Zone() != "" {
		return false // netip.Prefix.Contains: no prefix holds it
	}
	bits := x.bits6
	if ip.Is4() {
		bits = x.bits4
	}
	for _, b := range bits {
		if p, err := ip.Prefix(b); err == nil && x.prefixes[p] {
			return true
		}
	}
	return false
}
