// Package learn discovers egress: eBPF programs attached to a cgroup v2
// directory count every outbound connection attempt by user, process and
// destination, and copy the DNS answers the cgroup receives so every
// address carries the names it was resolved from. A learner drains these
// counts every second and commits them to the store in batches.
package learn

import (
	"bytes"
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
	// index holds the long lists as sets (indexed; nil: searched).
	index *filterIndex
}

// Ignored reports whether an attempt to ip:port by uid is left out.
func (f Filter) Ignored(uid uint32, ip netip.Addr, port uint16) bool {
	if f.Loopback && ip.IsLoopback() {
		return true
	}
	if f.index != nil {
		return f.index.ignored(uid, ip, port)
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

	mu sync.Mutex
	// pending holds the flows since the last flush; flows finds them.
	pending []pendingFlow
	// dns holds the DNS observations since the last flush: at most
	// maxPendingDNS, the others counted in dnsOver (for the whole run).
	dns     map[dnsKey]store.DNSObservation
	dnsOver uint64
	// questions are the answered questions by user, name, type and code:
	// at most maxPendingQuestions between flushes, the others counted.
	questions     map[questionKey]store.QuestionObservation
	questionsOver uint64

	// flows holds every flow in the store or pending (one map for both: a
	// million flows are 50 MB of map each); window numbers the flushes.
	flows  map[flowID]flowSlot
	window uint32
	known  int // the flows of the store, and those attempted since
	// byUser counts the known flows of each user: a user's new flow past
	// maxUser, or any new flow past maxKnown, is not recorded; its
	// attempts are counted in flowsOver (for the whole run).
	byUser            map[uint32]int
	maxKnown, maxUser int
	flowsOver         uint64
	flowsOverUID      uint32      // the user of the last attempt counted there
	shared            sharedLists // one-name lists of processes and cgroups
	newTimes          []time.Time // when recent new flows appeared
	lastNew           time.Time

	events     uint64 // attempts recorded
	ignored    uint64 // attempts left out by the filter
	dnsAnswers uint64 // DNS answers parsed
	dnsBad     uint64 // DNS payloads that did not parse
}

// flowID is a store.FlowKey packed without pointers, in the store's key
// order: a map of them costs the garbage collector nothing to scan.
type flowID [23]byte

func idOf(k store.FlowKey) flowID {
	var id flowID
	id[0], id[1], id[2], id[3] = byte(k.UID>>24), byte(k.UID>>16), byte(k.UID>>8), byte(k.UID)
	id[4] = k.Proto
	a := k.IP.As16()
	copy(id[5:21], a[:])
	id[21], id[22] = byte(k.Port>>8), byte(k.Port)
	return id
}

func (id flowID) uid() uint32 {
	return uint32(id[0])<<24 | uint32(id[1])<<16 | uint32(id[2])<<8 | uint32(id[3])
}

// Bounds of the flows a learner holds (those of the store, and the new
// ones): a local user can make a new flow with every connect to another
// address or port, a hundred thousand a second, and each stays in the
// store and in the learner's memory (a learner of 1M flows peaks at
// 300-350 MiB). A new flow past them is not recorded: its attempts are
// counted (the run's flows_unrecorded, and a warning at the flush). A
// user's share keeps one user from taking them all; root, trusted with
// the baseline and the table already, has no share of its own.
const (
	MaxFlows     = 1 << 20 // in all
	MaxUserFlows = 1 << 18 // of one user but root
)

// The bounds in force (tests lower them).
var maxFlows, maxUserFlows = MaxFlows, MaxUserFlows

// overBound reports whether a flow of id is new and over the bounds; a.mu
// is held.
func (a *aggregator) overBound(id flowID) bool {
	if a.known < min(a.maxKnown, a.maxUser) {
		return false // the common case: room for anyone
	}
	if a.flows[id].known {
		return false
	}
	uid := id.uid()
	return a.known >= a.maxKnown || uid != 0 && a.byUser[uid] >= a.maxUser
}

func (id flowID) key() store.FlowKey {
	return store.FlowKey{
		UID:   uint32(id[0])<<24 | uint32(id[1])<<16 | uint32(id[2])<<8 | uint32(id[3]),
		Proto: id[4],
		IP:    netip.AddrFrom16([16]byte(id[5:21])).Unmap(),
		Port:  uint16(id[21])<<8 | uint16(id[22]),
	}
}

// flowSlot is a flow's entry in aggregator.flows: its place in pending
// when win is the current window, and whether it is known (in the store
// or attempted since: a flow only a presented name brought is not).
type flowSlot struct {
	win   uint32
	idx   int32
	known bool
}

// sharedLists hands out one list per name for the lists of one name that
// most flows have ([]string{exe}, []string{cgroup}): clipped, so a merge
// that appends copies. Bounded: past maxShared names, a list of its own.
type sharedLists map[string][]string

const maxShared = 4096

func (m *sharedLists) of(name string) []string {
	if l, ok := (*m)[name]; ok {
		return l
	}
	l := []string{name}
	if *m == nil {
		*m = sharedLists{}
	}
	if len(*m) < maxShared {
		(*m)[name] = l
	}
	return l
}

// pendingFlow is a flow waiting for the next flush: a third of the size
// of a store.Flow, which a burst of new flows has a hundred thousand of.
type pendingFlow struct {
	id          flowID
	hits        uint64
	first, last int64 // unix nanoseconds
	procs       []string
	comms       []store.ProcessComm
	cgroups     []string
	presented   []string // names presented on first data (SNI, Host)
}

func (p *pendingFlow) flow() store.Flow {
	return store.Flow{
		FlowKey: p.id.key(), Hits: p.hits,
		FirstSeen: time.Unix(0, p.first).UTC(), LastSeen: time.Unix(0, p.last).UTC(),
		Processes: p.procs, Comms: p.comms, Cgroups: p.cgroups, Presented: p.presented,
	}
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
		filter:    f.indexed(),
		cgroups:   cgroups,
		dns:       map[dnsKey]store.DNSObservation{},
		questions: map[questionKey]store.QuestionObservation{},
		flows:     make(map[flowID]flowSlot, len(known)),
		window:    1,
		byUser:    map[uint32]int{},
		maxKnown:  maxFlows,
		maxUser:   maxUserFlows,
	}
	for _, k := range known {
		a.flows[idOf(k)] = flowSlot{known: true}
		a.byUser[k.UID]++
	}
	a.known = len(a.flows)
	return a
}

// slot finds the pending flow of id, adding it when the window has none;
// knownNow makes it known (an attempt), and says whether it was not
// (a new flow). a.mu is held.
func (a *aggregator) slot(id flowID, first, last int64, knownNow bool) (f *pendingFlow, isNew bool) {
	s, ok := a.flows[id]
	isNew = knownNow && !s.known
	if !ok || s.win != a.window || isNew {
		if !ok || s.win != a.window {
			s.win, s.idx = a.window, int32(len(a.pending))
			a.pending = append(a.pending, pendingFlow{id: id, first: first, last: last})
		}
		if isNew {
			s.known = true
			a.known++
			a.byUser[id.uid()]++
		}
		a.flows[id] = s
	}
	return &a.pending[s.idx], isNew
}

// merge adds hits of one flow to pending; a.mu is held.
func (a *aggregator) merge(id flowID, hits uint64, first, last int64, procs []string, comms []store.ProcessComm, cgroups []string) {
	f, _ := a.slot(id, first, last, false)
	a.mergeInto(f, hits, first, last, procs, comms, cgroups)
}

// mergeInto adds hits of one flow to its pending flow f; a.mu is held.
func (a *aggregator) mergeInto(f *pendingFlow, hits uint64, first, last int64, procs []string, comms []store.ProcessComm, cgroups []string) {
	f.hits += hits
	f.first, f.last = min(f.first, first), max(f.last, last)
	if f.procs == nil && len(procs) == 1 && procs[0] != "" {
		f.procs = a.shared.of(procs[0])
		procs = nil
	}
	if f.cgroups == nil && len(cgroups) == 1 {
		f.cgroups = a.shared.of(cgroups[0])
		cgroups = nil
	}
	for _, p := range procs {
		if p != "" && !slices.Contains(f.procs, p) && len(f.procs) < store.MaxProcesses {
			f.procs = append(f.procs, p)
		}
	}
	for _, c := range comms {
		if !slices.Contains(f.comms, c) && len(f.comms) < store.MaxProcesses {
			f.comms = append(f.comms, c)
		}
	}
	for _, c := range cgroups {
		if !slices.Contains(f.cgroups, c) && len(f.cgroups) < store.MaxCgroups {
			f.cgroups = append(f.cgroups, c)
		}
	}
}

// add records hits of one flow.
func (a *aggregator) add(at Attempt) {
	var cg []string
	if a.cgroups != nil {
		cg = []string{a.cgroups(at.CgroupID)}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.filter.Ignored(at.UID, at.IP, at.Port) {
		a.ignored += at.Hits
		return
	}
	a.events += at.Hits
	id := idOf(store.FlowKey{UID: at.UID, Proto: at.Proto, IP: at.IP, Port: at.Port})
	if a.overBound(id) {
		a.flowsOver += at.Hits
		a.flowsOverUID = at.UID
		return
	}
	first, last := at.First.UnixNano(), at.Last.UnixNano()
	f, isNew := a.slot(id, first, last, true)
	if isNew {
		a.newTimes = append(a.newTimes, at.First)
		if at.First.After(a.lastNew) {
			a.lastNew = at.First
		}
	}
	procs, comms := processOf(at)
	a.mergeInto(f, at.Hits, first, last, procs, comms, cg)
}

// processOf names the process of an attempt: its executable, and its
// comm beside it where that differs; the comm alone when the kernel could
// not read the executable.
func processOf(at Attempt) ([]string, []store.ProcessComm) {
	if at.Exe == "" {
		return []string{at.Comm}, nil
	}
	if at.Comm == "" || store.SameName(at.Exe, at.Comm) {
		return []string{at.Exe}, nil
	}
	return []string{at.Exe}, []store.ProcessComm{{Exe: at.Exe, Comm: at.Comm}}
}

// addPresented records the name a connection of a flow presented on its
// first data (TLS SNI, HTTP Host). It counts no hit: the connect did.
func (a *aggregator) addPresented(uid uint32, proto uint8, ip netip.Addr, port uint16, name string, at time.Time) {
	if name == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ip = ip.Unmap()
	if a.filter.Ignored(uid, ip, port) {
		return
	}
	id := idOf(store.FlowKey{UID: uid, Proto: proto, IP: ip, Port: port})
	if a.overBound(id) {
		return // its connect is over the bounds too, and counted there
	}
	a.merge(id, 0, at.UnixNano(), at.UnixNano(), nil, nil, nil)
	a.present(id, []string{name})
}

// present adds names presented to a pending flow; a.mu is held.
func (a *aggregator) present(id flowID, names []string) {
	f := &a.pending[a.flows[id].idx]
	for _, n := range names {
		if !slices.Contains(f.presented, n) && len(f.presented) < store.MaxPresented {
			f.presented = append(f.presented, n)
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
	a.addQuestion(p, ans)
	for _, addr := range ans.Addrs {
		if len(addr.Names) == 0 {
			continue
		}
		k := dnsKey{ip: addr.IP, uid: p.UID, name: addr.Names[0]}
		if _, ok := a.dns[k]; !ok && len(a.dns) >= maxPendingDNS {
			a.dnsOver++
			continue
		}
		a.dns[k] = store.DNSObservation{IP: addr.IP, Names: addr.Names, TTL: addr.TTL, UID: p.UID, Seen: p.Time}
	}
}

// maxPendingDNS bounds the DNS observations (address, user, name) gathered
// between two flushes: a user whose answers give many addresses (a
// wildcard name of its own, 250 addresses an answer) would otherwise grow
// the map without end until the flush. The others are counted (the run's
// dns_unrecorded, and a warning at the flush), not kept.
var maxPendingDNS = 50000 // a variable: tests lower it

// countDNSOver counts n DNS observations not recorded (by the store).
func (a *aggregator) countDNSOver(n uint64) {
	a.mu.Lock()
	a.dnsOver += n
	a.mu.Unlock()
}

// taken is what a flush takes over: the pending flows, sorted in the
// store's key order, and the DNS observations.
type taken struct {
	flows         []pendingFlow
	dns           []store.DNSObservation
	questions     []store.QuestionObservation
	questionsOver uint64
}

// chunk converts flows[i:j] for the store.
func (t *taken) chunk(i, j int) []store.Flow {
	out := make([]store.Flow, 0, j-i)
	for k := i; k < j; k++ {
		out = append(out, t.flows[k].flow())
	}
	return out
}

// take hands over what was gathered since the last flush.
func (a *aggregator) take() *taken {
	a.mu.Lock()
	t := &taken{flows: a.pending}
	for _, o := range a.dns {
		t.dns = append(t.dns, o)
	}
	// The next window likely holds as many flows: no room to double into.
	a.pending = make([]pendingFlow, 0, len(t.flows))
	a.window++ // the flows' places in pending are of the last window
	a.dns = map[dnsKey]store.DNSObservation{}
	for _, q := range a.questions {
		t.questions = append(t.questions, q)
	}
	t.questionsOver = a.questionsOver
	a.questions, a.questionsOver = map[questionKey]store.QuestionObservation{}, 0
	a.mu.Unlock()
	slices.SortFunc(t.flows, func(x, y pendingFlow) int { return bytes.Compare(x.id[:], y.id[:]) })
	return t
}

// giveBack returns flows and DNS observations that could not be committed,
// merging them with what arrived meanwhile, so that the next flush writes
// them.
func (a *aggregator) giveBack(flows []pendingFlow, dns []store.DNSObservation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range flows {
		f := &flows[i]
		a.merge(f.id, f.hits, f.first, f.last, f.procs, f.comms, f.cgroups)
		a.present(f.id, f.presented)
	}
	for _, o := range dns {
		k := dnsKey{ip: o.IP, uid: o.UID, name: o.Names[0]}
		cur, ok := a.dns[k]
		if !ok && len(a.dns) >= maxPendingDNS {
			a.dnsOver++
			continue
		}
		if !ok || o.Seen.After(cur.Seen) {
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
	// DNSIgnored counts the DNS answers that matched no query of the
	// receiving socket (unsolicited, forged, replayed): their names are
	// not used.
	DNSIgnored uint64 `json:"dns_ignored"`
	// DNSUnrecorded counts the DNS observations (address, user, name) that
	// found no room between two flushes (maxPendingDNS).
	DNSUnrecorded uint64 `json:"dns_unrecorded"`
	// FlowsUnrecorded counts the attempts of new flows over the bounds of
	// the flows a learner holds (MaxFlows, MaxUserFlows).
	FlowsUnrecorded uint64 `json:"flows_unrecorded"`
	// FlowsUnrecordedUID is the user of the last of them.
	FlowsUnrecordedUID uint32 `json:"flows_unrecorded_uid"`
	Ignored            uint64 `json:"ignored"`
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
		Events:             a.events,
		Flows:              a.known,
		NewLastMinute:      len(a.newTimes),
		SinceLastNew:       -1,
		DNSAnswers:         a.dnsAnswers,
		DNSUnrecorded:      a.dnsOver,
		FlowsUnrecorded:    a.flowsOver,
		FlowsUnrecordedUID: a.flowsOverUID,
		Ignored:            a.ignored,
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
	return fmt.Sprintf("learning %s | %.0f events/s | %d flows, %d new in the last minute | last new flow %s | lost %d | dns answers %d, ignored %d",
		s.Elapsed.Round(time.Second), s.EventsPerSec, s.Flows, s.NewLastMinute, last, s.Lost, s.DNSAnswers, s.DNSIgnored)
}
