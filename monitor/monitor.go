// Package monitor watches what the default rules of our table log
// (NFLOG): it counts every logged packet by user, destination and action
// within fixed bounds, records the counts in the store, summarizes them
// for "egress-enforce denied", and exposes them, with the kernel's
// counters, as Prometheus metrics.
package monitor

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/egresskit/egress/internal/topk"
	"github.com/egresskit/egress/store"
)

// Monitor counts what the default rules logged: by user, destination and
// action, in total and since the last flush to the store. It is safe for
// concurrent use, and its memory is bounded whatever the number of
// distinct destinations (a flood of them is an attack like any other):
//
//   - totals by action and by minute are exact;
//   - the top destinations, users and (user, service) pairs come from
//     space-saving summaries of MonitorOptions.TopCapacity destinations,
//     UserCapacity users and UserCapacity pairs per action: a destination with more than 1/TopCapacity of the packets is
//     always in, its count exact or overstated by at most its Err;
//   - between two flushes, at most PendingCapacity destinations are kept
//     with exact counts; past that a newcomer takes the place of the
//     lightest one when it has as many packets, and the packets of the
//     one that loses are counted as unrecorded (Stats, and the store's
//     meta/obs_unrecorded), never silently dropped.
type Monitor struct {
	mu    sync.Mutex
	opts  MonitorOptions
	top   map[string]*topk.Summary[store.FlowKey, struct{}] // by action
	users map[string]*topk.Summary[uint32, struct{}]        // by action
	// services: packets whose sender's service the watch found, by
	// action; svcTotal counts them all (the summary keeps the top).
	services map[string]*topk.Summary[svcKey, struct{}]
	svcTotal map[string]uint64
	pending  *topk.Summary[obsKey, span] // since the last Take
	left     store.Unrecorded            // since the last Take
	minutes  map[int64]store.DenialCount // since the last Take
	total    map[string]uint64           // by action, since the start
	stats    MonitorStats
}

// MonitorOptions bound a Monitor; zero values take the defaults.
type MonitorOptions struct {
	TopCapacity     int
	UserCapacity    int
	PendingCapacity int
}

// Defaults of MonitorOptions.
const (
	DefaultTopCapacity     = 1024
	DefaultUserCapacity    = 256
	DefaultPendingCapacity = 4096
	// maxMinutes bounds the per-minute counts kept while flushes fail: a
	// week; older minutes are dropped and counted.
	maxMinutes = 7 * 24 * 60
)

// MonitorStats says what the monitor saw and what its bounds left out.
type MonitorStats struct {
	Entries uint64 // NFLOG messages of our prefixes
	// Unrecorded are packets whose destination could not be kept between
	// two flushes, by action, since the start.
	UnrecordedDrop, UnrecordedAudit uint64
	LostMinutes                     uint64 // per-minute counts dropped after a week of failed flushes
	ReceiveErrors                   uint64 // NFLOG socket errors (ENOBUFS: messages lost)
	LostLogs                        uint64 // messages lost, from the gaps in their sequence numbers
	// Tracked and Pending are the entries of the summaries and of the
	// pending destinations, and their bounds.
	Tracked, TrackedCap int
	Pending, PendingCap int
}

// svcKey is a user's service.
type svcKey struct {
	uid     uint32
	service string
}

func (a svcKey) compare(b svcKey) int {
	return cmp.Or(cmp.Compare(a.uid, b.uid), cmp.Compare(a.service, b.service))
}

type obsKey struct {
	action string
	key    store.FlowKey
}

type span struct {
	first, last time.Time
	services    []string // the senders' services, at most store.MaxServices
}

// service adds a sender's service ("" : none known).
func (s *span) service(svc string) {
	if svc != "" && !slices.Contains(s.services, svc) && len(s.services) < store.MaxServices {
		s.services = append(s.services, svc)
	}
}

func (s *span) see(t time.Time) {
	if s.first.IsZero() || t.Before(s.first) {
		s.first = t
	}
	if t.After(s.last) {
		s.last = t
	}
}

// NewMonitor returns an empty monitor with the default bounds.
func NewMonitor() *Monitor { return NewMonitorWith(MonitorOptions{}) }

// NewMonitorWith returns an empty monitor with the given bounds.
func NewMonitorWith(o MonitorOptions) *Monitor {
	o.TopCapacity = cmp.Or(max(o.TopCapacity, 0), DefaultTopCapacity)
	o.UserCapacity = cmp.Or(max(o.UserCapacity, 0), DefaultUserCapacity)
	o.PendingCapacity = cmp.Or(max(o.PendingCapacity, 0), DefaultPendingCapacity)
	return &Monitor{
		opts:     o,
		top:      map[string]*topk.Summary[store.FlowKey, struct{}]{},
		users:    map[string]*topk.Summary[uint32, struct{}]{},
		services: map[string]*topk.Summary[svcKey, struct{}]{},
		svcTotal: map[string]uint64{},
		pending:  topk.NewExact[obsKey, span](o.PendingCapacity),
		minutes:  map[int64]store.DenialCount{},
		total:    map[string]uint64{},
	}
}

// Add counts one logged packet. Packets without a socket owner (no UID)
// are counted under UID 4294967295.
func (m *Monitor) Add(e LogEntry) {
	uid := uint32(NoUID)
	if e.UID != nil {
		uid = *e.UID
	}
	k := store.FlowKey{UID: uid, Proto: e.Proto, IP: e.Dst.Unmap(), Port: e.Port}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.Entries++
	m.total[e.Action]++
	if e.Action != ObsActionDrop && e.Action != ObsActionAudit {
		return // another prefix of ours: counted, not kept
	}
	if m.top[e.Action] == nil {
		m.top[e.Action] = topk.New[store.FlowKey, struct{}](m.opts.TopCapacity)
		m.users[e.Action] = topk.New[uint32, struct{}](m.opts.UserCapacity)
		m.services[e.Action] = topk.New[svcKey, struct{}](m.opts.UserCapacity)
	}
	m.top[e.Action].Add(k, 1, nil)
	m.users[e.Action].Add(uid, 1, nil)
	if e.Service != "" {
		m.services[e.Action].Add(svcKey{uid, e.Service}, 1, nil)
		m.svcTotal[e.Action]++
	}
	m.keep(obsKey{e.Action, k}, 1, func(s *span) { s.see(e.Time); s.service(e.Service) })
	m.countMinute(e.Time.Unix()/60, e.Action == ObsActionDrop, 1)
}

// keep adds to the pending destinations; what loses its place is counted
// as unrecorded.
func (m *Monitor) keep(k obsKey, hits uint64, update func(*span)) {
	if lost, ok := m.pending.Add(k, hits, update); ok {
		m.left.Add(lost.Key.action, lost.Count)
		if lost.Key.action == ObsActionDrop {
			m.stats.UnrecordedDrop += lost.Count
		} else {
			m.stats.UnrecordedAudit += lost.Count
		}
	}
}

func (m *Monitor) countMinute(minute int64, drop bool, n uint64) {
	dc, ok := m.minutes[minute]
	if !ok && len(m.minutes) >= maxMinutes {
		oldest := minute
		for k := range m.minutes {
			oldest = min(oldest, k)
		}
		if oldest == minute {
			m.stats.LostMinutes++
			return
		}
		delete(m.minutes, oldest)
		m.stats.LostMinutes++
	}
	if drop {
		dc.Drop += n
	} else {
		dc.Audit += n
	}
	m.minutes[minute] = dc
}

// NoteReceiveError counts an error of the NFLOG socket.
func (m *Monitor) NoteReceiveError() {
	m.mu.Lock()
	m.stats.ReceiveErrors++
	m.mu.Unlock()
}

// NoteLost counts n log messages the NFLOG socket lost.
func (m *Monitor) NoteLost(n uint64) {
	m.mu.Lock()
	m.stats.LostLogs += n
	m.mu.Unlock()
}

// NoUID stands for packets that no local socket owns.
const NoUID = store.NoUID

// Actions of logged packets, as the store names its observations.
const (
	ObsActionDrop  = store.ObsDrop
	ObsActionAudit = store.ObsAudit
)

// Take hands over what was counted since the last Take, for the store.
func (m *Monitor) Take() *store.ObservationBatch {
	m.mu.Lock()
	defer m.mu.Unlock()
	pend := m.pending.Reset()
	b := &store.ObservationBatch{Observations: make([]store.Observation, 0, len(pend)), Minutes: m.minutes, Unrecorded: m.left}
	for _, e := range pend {
		b.Observations = append(b.Observations, store.Observation{Kind: e.Key.action, FlowKey: e.Key.key, Hits: e.Count,
			FirstSeen: e.Val.first.UTC(), LastSeen: e.Val.last.UTC(), Services: e.Val.services})
	}
	m.minutes, m.left = map[int64]store.DenialCount{}, store.Unrecorded{}
	return b
}

// GiveBack returns what a failed flush could not write; it goes back
// under the same bounds.
func (m *Monitor) GiveBack(b *store.ObservationBatch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range b.Observations {
		m.keep(obsKey{o.Kind, o.FlowKey}, o.Hits, func(s *span) {
			s.see(o.FirstSeen)
			s.see(o.LastSeen)
			for _, svc := range o.Services {
				s.service(svc)
			}
		})
	}
	for k, v := range b.Minutes {
		m.countMinute(k, true, v.Drop)
		m.countMinute(k, false, v.Audit)
	}
	m.left = m.left.Plus(b.Unrecorded)
}

// Stats returns the monitor's counters and the sizes of its structures.
func (m *Monitor) Stats() MonitorStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	for a := range m.top {
		s.Tracked += m.top[a].Len() + m.users[a].Len() + m.services[a].Len()
		s.TrackedCap += m.top[a].Cap() + m.users[a].Cap() + m.services[a].Cap()
	}
	s.Pending, s.PendingCap = m.pending.Len(), m.pending.Cap()
	return s
}

// Count is one destination's packets for one user and action.
type Count struct {
	Action string     `json:"action"`
	UID    uint32     `json:"uid"`
	Proto  uint8      `json:"proto"`
	IP     netip.Addr `json:"ip"`
	Port   uint16     `json:"port"`
	Hits   uint64     `json:"hits"`
	// Err is how much Hits may overstate (a destination that took the
	// place of others in the summary).
	Err uint64 `json:"err,omitempty"`
}

// key is the flow a count is of.
func (c Count) key() store.FlowKey {
	return store.FlowKey{UID: c.UID, Proto: c.Proto, IP: c.IP, Port: c.Port}
}

// Top returns the k destinations with the most packets, per action, and
// the packets of the others, per action, and the entries seen.
func (m *Monitor) Top(k int) (top []Count, other map[string]uint64, entries uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	other = m.totals()
	for a, s := range m.top {
		for _, e := range s.Top(k, store.FlowKey.Compare) {
			top = append(top, Count{Action: a, UID: e.Key.UID, Proto: e.Key.Proto, IP: e.Key.IP, Port: e.Key.Port, Hits: e.Count, Err: e.Err})
			other[a] -= e.Count
		}
	}
	sortCounts(top)
	return top, other, m.stats.Entries
}

// ByUser returns the k users with the most packets, per action, and the
// packets of the other users per action.
func (m *Monitor) ByUser(k int) (top []Count, other map[string]uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	other = m.totals()
	for a, s := range m.users {
		for _, e := range s.Top(k, cmp.Compare[uint32]) {
			top = append(top, Count{Action: a, UID: e.Key, Hits: e.Count, Err: e.Err})
			other[a] -= e.Count
		}
	}
	sortCounts(top)
	return top, other
}

// ServiceCount is a user's service's packets for one action.
type ServiceCount struct {
	Action  string `json:"action"`
	UID     uint32 `json:"uid"`
	Service string `json:"service"`
	Hits    uint64 `json:"hits"`
	Err     uint64 `json:"err,omitempty"` // how much Hits may overstate
}

// ByService returns the k (user, service) pairs with the most packets,
// per action, among the packets whose sender's service the watch found
// (LogEntry.Service), and the packets of the other pairs per action.
func (m *Monitor) ByService(k int) (top []ServiceCount, other map[string]uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	other = map[string]uint64{}
	for a, s := range m.services {
		other[a] = m.svcTotal[a]
		for _, e := range s.Top(k, svcKey.compare) {
			top = append(top, ServiceCount{Action: a, UID: e.Key.uid, Service: e.Key.service, Hits: e.Count, Err: e.Err})
			other[a] -= e.Count
		}
	}
	slices.SortFunc(top, func(a, b ServiceCount) int {
		return cmp.Or(cmp.Compare(b.Hits, a.Hits), cmp.Compare(a.UID, b.UID), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Action, b.Action))
	})
	return top, other
}

// Totals returns the logged packets counted since the start, by action.
func (m *Monitor) Totals() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.total)
}

// totals copies the packets by action (of the kept actions).
func (m *Monitor) totals() map[string]uint64 {
	out := map[string]uint64{}
	for a := range m.top {
		out[a] = m.total[a]
	}
	return out
}

func sortCounts(c []Count) {
	slices.SortFunc(c, func(a, b Count) int {
		return cmp.Or(cmp.Compare(b.Hits, a.Hits), cmp.Compare(a.UID, b.UID), a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.Action, b.Action))
	})
}
