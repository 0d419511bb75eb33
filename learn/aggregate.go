// Package learn discovers egress: eBPF programs attached to a cgroup v2
// directory count every outbound connection attempt by user, process and
// destination, and copy the DNS answers the cgroup receives so every
// address carries the names it was resolved from. A learner drains these
// counts every second and commits them to the store in batches.
package learn

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/egresskit/egress/internal/dnsanswer"
	"github.com/egresskit/egress/store"
)

// Filter says which attempts the learner does not record.
type Filter struct {
	Users    []uint32
	Prefixes []netip.Prefix
	Ports    []uint16
	// Loopback ignores 127.0.0.0/8 and ::1.
	Loopback bool
}

// Ignored reports whether an attempt to ip:port by uid is left out.
func (f Filter) Ignored(uid uint32, ip netip.Addr, port uint16) bool {
	if f.Loopback && ip.IsLoopback() {
		return true
	}
	if slices.Contains(f.Users, uid) || slices.Contains(f.Ports, port) {
		return true
	}
	for _, p := range f.Prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// aggregator gathers attempts and DNS answers between two flushes, and
// keeps the figures of the live status. It is safe for concurrent use.
type aggregator struct {
	filter  Filter
	cgroups func(uint64) string

	mu      sync.Mutex
	pending map[store.FlowKey]*store.Flow
	dns     map[dnsKey]store.DNSObservation

	known    map[store.FlowKey]struct{} // every flow in the store or pending
	newTimes []time.Time                // when recent new flows appeared
	lastNew  time.Time

	events     uint64 // attempts recorded
	ignored    uint64 // attempts left out by the filter
	dnsAnswers uint64 // DNS answers parsed
	dnsBad     uint64 // DNS payloads that did not parse
}

// dnsKey identifies a DNS observation: an address, who asked, and the name
// asked for (the first of the chain).
type dnsKey struct {
	ip   netip.Addr
	uid  uint32
	name string
}

func newAggregator(f Filter, cgroups func(uint64) string, known []store.FlowKey) *aggregator {
	a := &aggregator{
		filter:  f,
		cgroups: cgroups,
		pending: map[store.FlowKey]*store.Flow{},
		dns:     map[dnsKey]store.DNSObservation{},
		known:   make(map[store.FlowKey]struct{}, len(known)),
	}
	for _, k := range known {
		a.known[k] = struct{}{}
	}
	return a
}

// add records hits of one flow.
func (a *aggregator) add(at Attempt) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.filter.Ignored(at.UID, at.IP, at.Port) {
		a.ignored += at.Hits
		return
	}
	a.events += at.Hits
	key := store.FlowKey{UID: at.UID, Proto: at.Proto, IP: at.IP, Port: at.Port}
	f, ok := a.pending[key]
	if !ok {
		f = &store.Flow{FlowKey: key, FirstSeen: at.First, LastSeen: at.Last}
		a.pending[key] = f
		if _, seen := a.known[key]; !seen {
			a.known[key] = struct{}{}
			a.newTimes = append(a.newTimes, at.First)
			if at.First.After(a.lastNew) {
				a.lastNew = at.First
			}
		}
	}
	f.Hits += at.Hits
	if at.First.Before(f.FirstSeen) {
		f.FirstSeen = at.First
	}
	if at.Last.After(f.LastSeen) {
		f.LastSeen = at.Last
	}
	if at.Comm != "" && !slices.Contains(f.Processes, at.Comm) && len(f.Processes) < store.MaxProcesses {
		f.Processes = append(f.Processes, at.Comm)
	}
	if a.cgroups != nil {
		if cg := a.cgroups(at.CgroupID); !slices.Contains(f.Cgroups, cg) && len(f.Cgroups) < store.MaxCgroups {
			f.Cgroups = append(f.Cgroups, cg)
		}
	}
}

// addDNS parses a DNS answer and records the addresses it gives.
func (a *aggregator) addDNS(p DNSPacket) {
	ans, err := dnsanswer.Parse(p.Payload, p.OrigLen)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.dnsBad++
		return
	}
	a.dnsAnswers++
	for _, addr := range ans.Addrs {
		if len(addr.Names) == 0 {
			continue
		}
		k := dnsKey{ip: addr.IP, uid: p.UID, name: addr.Names[0]}
		a.dns[k] = store.DNSObservation{IP: addr.IP, Names: addr.Names, TTL: addr.TTL, UID: p.UID, Seen: p.Time}
	}
}

// take hands over what was gathered since the last flush.
func (a *aggregator) take() *store.Batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := &store.Batch{}
	for _, f := range a.pending {
		b.Flows = append(b.Flows, *f)
	}
	for _, o := range a.dns {
		b.DNS = append(b.DNS, o)
	}
	a.pending = map[store.FlowKey]*store.Flow{}
	a.dns = map[dnsKey]store.DNSObservation{}
	return b
}

// giveBack returns a batch that could not be committed, merging it with
// what arrived meanwhile, so that the next flush writes it.
func (a *aggregator) giveBack(b *store.Batch) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range b.Flows {
		p, ok := a.pending[f.FlowKey]
		if !ok {
			f := f
			a.pending[f.FlowKey] = &f
			continue
		}
		p.Hits += f.Hits
		if f.FirstSeen.Before(p.FirstSeen) {
			p.FirstSeen = f.FirstSeen
		}
		if f.LastSeen.After(p.LastSeen) {
			p.LastSeen = f.LastSeen
		}
		for _, c := range f.Processes {
			if !slices.Contains(p.Processes, c) {
				p.Processes = append(p.Processes, c)
			}
		}
		for _, c := range f.Cgroups {
			if !slices.Contains(p.Cgroups, c) {
				p.Cgroups = append(p.Cgroups, c)
			}
		}
	}
	for _, o := range b.DNS {
		k := dnsKey{ip: o.IP, uid: o.UID, name: o.Names[0]}
		if cur, ok := a.dns[k]; !ok || o.Seen.After(cur.Seen) {
			a.dns[k] = o
		}
	}
}

// Status is the live picture of a learning run.
type Status struct {
	Elapsed       time.Duration `json:"elapsed"`
	Events        uint64        `json:"events"`
	EventsPerSec  float64       `json:"events_per_sec"`
	Flows         int           `json:"flows"`
	NewLastMinute int           `json:"new_last_minute"`
	SinceLastNew  time.Duration `json:"since_last_new"` // -1: no new flow this run
	Lost          uint64        `json:"lost"`
	DNSAnswers    uint64        `json:"dns_answers"`
	Ignored       uint64        `json:"ignored"`
}

func (a *aggregator) status(now time.Time) Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	cut := now.Add(-time.Minute)
	i := 0
	for i < len(a.newTimes) && a.newTimes[i].Before(cut) {
		i++
	}
	a.newTimes = a.newTimes[i:]
	s := Status{
		Events:        a.events,
		Flows:         len(a.known),
		NewLastMinute: len(a.newTimes),
		SinceLastNew:  -1,
		DNSAnswers:    a.dnsAnswers,
		Ignored:       a.ignored,
	}
	if !a.lastNew.IsZero() {
		s.SinceLastNew = now.Sub(a.lastNew)
	}
	return s
}

// Line renders the status on one terminal line.
func (s Status) Line() string {
	last := "none yet"
	if s.SinceLastNew >= 0 {
		last = s.SinceLastNew.Round(time.Second).String() + " ago"
	}
	return fmt.Sprintf("learning %s | %.0f events/s | %d flows, %d new in the last minute | last new flow %s | lost %d | dns answers %d",
		s.Elapsed.Round(time.Second), s.EventsPerSec, s.Flows, s.NewLastMinute, last, s.Lost, s.DNSAnswers)
}
