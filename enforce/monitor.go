package enforce

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/egresskit/egress/store"
)

// Monitor counts what the default rule logged: by user, destination and
// action, in total and since the last flush to the store. It is safe for
// concurrent use.
type Monitor struct {
	mu      sync.Mutex
	counts  map[obsKey]*obsCount // since the monitor started
	pending map[obsKey]*obsCount // since the last Take
	minutes map[int64]store.DenialCount
	total   map[string]uint64 // by action
	entries uint64
}

type obsKey struct {
	action string
	key    store.FlowKey
}

type obsCount struct {
	hits        uint64
	first, last time.Time
}

// NewMonitor returns an empty monitor.
func NewMonitor() *Monitor {
	return &Monitor{
		counts:  map[obsKey]*obsCount{},
		pending: map[obsKey]*obsCount{},
		minutes: map[int64]store.DenialCount{},
		total:   map[string]uint64{},
	}
}

func bump(m map[obsKey]*obsCount, k obsKey, hits uint64, first, last time.Time) {
	c, ok := m[k]
	if !ok {
		c = &obsCount{first: first, last: last}
		m[k] = c
	}
	c.hits += hits
	if first.Before(c.first) {
		c.first = first
	}
	if last.After(c.last) {
		c.last = last
	}
}

// Add counts one logged packet. Packets without a socket owner (no UID)
// are counted under UID 4294967295.
func (m *Monitor) Add(e LogEntry) {
	uid := uint32(NoUID)
	if e.UID != nil {
		uid = *e.UID
	}
	k := obsKey{action: e.Action, key: store.FlowKey{UID: uid, Proto: e.Proto, IP: e.Dst.Unmap(), Port: e.Port}}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries++
	m.total[e.Action]++
	bump(m.counts, k, 1, e.Time, e.Time)
	bump(m.pending, k, 1, e.Time, e.Time)
	minute := e.Time.Unix() / 60
	dc := m.minutes[minute]
	if e.Action == ObsActionDrop {
		dc.Drop++
	} else {
		dc.Audit++
	}
	m.minutes[minute] = dc
}

// NoUID stands for packets that no local socket owns.
const NoUID = 1<<32 - 1

// Actions of logged packets, as the store names its observations.
const (
	ObsActionDrop  = store.ObsDrop
	ObsActionAudit = store.ObsAudit
)

// Take hands over what was counted since the last Take, for the store.
func (m *Monitor) Take() ([]store.Observation, map[int64]store.DenialCount) {
	m.mu.Lock()
	defer m.mu.Unlock()
	obs := make([]store.Observation, 0, len(m.pending))
	for k, c := range m.pending {
		if k.action != store.ObsDrop && k.action != store.ObsAudit {
			continue
		}
		obs = append(obs, store.Observation{Kind: k.action, FlowKey: k.key, Hits: c.hits, FirstSeen: c.first.UTC(), LastSeen: c.last.UTC()})
	}
	minutes := m.minutes
	m.pending = map[obsKey]*obsCount{}
	m.minutes = map[int64]store.DenialCount{}
	return obs, minutes
}

// GiveBack returns what a failed flush could not write.
func (m *Monitor) GiveBack(obs []store.Observation, minutes map[int64]store.DenialCount) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range obs {
		bump(m.pending, obsKey{o.Kind, o.FlowKey}, o.Hits, o.FirstSeen, o.LastSeen)
	}
	for k, v := range minutes {
		cur := m.minutes[k]
		cur.Drop += v.Drop
		cur.Audit += v.Audit
		m.minutes[k] = cur
	}
}

// Count is one destination's packets for one user and action.
type Count struct {
	Action string     `json:"action"`
	UID    uint32     `json:"uid"`
	Proto  uint8      `json:"proto"`
	IP     netip.Addr `json:"ip"`
	Port   uint16     `json:"port"`
	Hits   uint64     `json:"hits"`
}

// Top returns the k destinations with the most packets, per action, and
// the packets of the others, per action.
func (m *Monitor) Top(k int) (top []Count, other map[string]uint64, entries uint64) {
	m.mu.Lock()
	all := make([]Count, 0, len(m.counts))
	for key, c := range m.counts {
		all = append(all, Count{Action: key.action, UID: key.key.UID, Proto: key.key.Proto, IP: key.key.IP, Port: key.key.Port, Hits: c.hits})
	}
	other = map[string]uint64{}
	for a, n := range m.total {
		other[a] = n
	}
	entries = m.entries
	m.mu.Unlock()
	slices.SortFunc(all, func(a, b Count) int {
		return cmp.Or(cmp.Compare(b.Hits, a.Hits), cmp.Compare(a.UID, b.UID), a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Action, b.Action))
	})
	if len(all) > k {
		all = all[:k]
	}
	for _, c := range all {
		other[c.Action] -= c.Hits
	}
	return all, other, entries
}

// ByUser returns the packets per user and action, the k largest, and the
// packets of the other users per action.
func (m *Monitor) ByUser(k int) (top []Count, other map[string]uint64) {
	m.mu.Lock()
	sums := map[[2]any]uint64{}
	other = map[string]uint64{}
	for key, c := range m.counts {
		sums[[2]any{key.action, key.key.UID}] += c.hits
	}
	for a, n := range m.total {
		other[a] = n
	}
	m.mu.Unlock()
	for key, n := range sums {
		top = append(top, Count{Action: key[0].(string), UID: key[1].(uint32), Hits: n})
	}
	slices.SortFunc(top, func(a, b Count) int {
		return cmp.Or(cmp.Compare(b.Hits, a.Hits), cmp.Compare(a.UID, b.UID), cmp.Compare(a.Action, b.Action))
	})
	if len(top) > k {
		top = top[:k]
	}
	for _, c := range top {
		other[c.Action] -= c.Hits
	}
	return top, other
}
