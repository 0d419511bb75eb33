//go:build linux

// Package follow keeps the name rules of the current generation true to
// DNS: the DNS follower.
package follow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/store"
)

// The follower keeps name rules true to DNS. Its eBPF programs (see
// bpf/follow.c) check every answer in the kernel (the enforced namespace,
// a configured resolver, port 53, a query with that id and question from
// the same socket, address records of the question's CNAME chain only),
// authorize the answer's addresses for the asking user before the
// application can read them, and mark the sockets that connect to them;
// the table accepts marked packets from the cgroup of a running follower,
// and the follower's mark check drops every marked packet its socket was
// not authorized for. In user space the follower then adds the addresses
// to the nftables timeout sets for their TTL, between the floor and the
// cap: the sets are what lasts, the mark only bridges the moments before
// the element is in.

// Config configures the follower.
type Config struct {
	// Cgroup is the cgroup v2 directory whose sockets are followed.
	Cgroup string
	Target nft.Target
	Table  string
	// Store gives the current generation's name rules, and receives the
	// follower's counters.
	Store *store.Store
	// Resolvers are the only sources of answers the follower uses.
	Resolvers []netip.Addr
	// Window is how long a just-resolved destination is allowed through
	// the socket mark, until the set holds it (default 30 s).
	Window time.Duration
	// Reload is the interval of the store check for a new generation.
	Reload time.Duration
	// PinRoot is a directory on a bpf file system (default
	// DefaultPinRoot). The follower pins its mark check and the sockets'
	// authorizations there: a follower that dies leaves the check
	// attached, and a restarted one keeps recognizing the sockets marked
	// before.
	PinRoot string
	// QueryShare is how many unanswered queries of one user the kernel
	// holds (default 1024); QueryLife is how long one is kept (30 s).
	QueryShare int
	QueryLife  time.Duration
	// GateTimeout is how long the table accepts the follow mark after the
	// follower last said it runs (default 5 s); GateRefresh is how often
	// it says so (1 s).
	GateTimeout time.Duration
	GateRefresh time.Duration
	Log         *slog.Logger
	// OnElement hears about each element added or refreshed (optional).
	OnElement func(Address)
	// Ready is closed once the programs are attached (optional).
	Ready chan<- struct{}
}

// Address is an address a DNS answer gave for a followed name.
type Address struct {
	UID     uint32        `json:"uid"`
	Name    string        `json:"name"`
	IP      netip.Addr    `json:"ip"`
	Proto   uint8         `json:"proto"`
	Port    uint16        `json:"port"`
	Timeout time.Duration `json:"timeout_ns"`
	// Latency runs from the answer reaching the host to the element being
	// in the kernel's set.
	Latency time.Duration `json:"latency_ns"`
	New     bool          `json:"new"` // false: a refresh
}

// nameHash is the hash the kernel computes of a question name (FNV-1a 64
// of the lower-case name without a trailing dot, or of "*.suffix").
func nameHash(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(strings.ToLower(strings.TrimSuffix(name, "."))))
	return h.Sum64()
}

// Follower is a running follower.
type Follower struct {
	cfg       Config
	nl        *nft.Netlink
	objs      bpf.FollowObjects
	check     link.Link // the mark check, pinned
	links     []link.Link
	rd        *ringbuf.Reader
	clk       cgroupbpf.BootClock // owned by readAnswers
	pinDir    string
	cgroupID  uint64
	sizes     followSizes
	shareSpec *ebpf.MapSpec
	shares    map[uint32]*ebpf.Map // owned by Run (and StartFollower)
	// gateFailing: the last refresh of the gate failed (said once).
	gateFailing bool
	// pinsLock releases the pin directory's lock a clean stop holds.
	pinsLock func()
	saveMu   sync.Mutex // one save of the counters at a time
	saved    Stats      // the counters last saved (under saveMu)
	// Store checks for a new generation, and plans read (tests: a plan
	// is read only when the generation changed).
	checks, planReads atomic.Uint64

	mu      sync.Mutex
	spec    *plan.FollowSpec
	gen     uint64
	byHash  map[[2]uint64][]plan.NameRule // (uid, hash) -> rules
	live    map[string]map[netip.Addr]time.Time
	stats   Stats
	latency []time.Duration
	reports chan []Address // elements to report after a save (Run)
}

func (c *Config) defaults() error {
	if c.Window <= 0 {
		c.Window = 30 * time.Second
	}
	if c.Reload <= 0 {
		c.Reload = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.QueryShare <= 0 {
		c.QueryShare = 1024
	}
	if c.QueryLife <= 0 {
		c.QueryLife = 30 * time.Second
	}
	c.gateDefaults()
	if c.Cgroup == "" {
		var err error
		if c.Cgroup, err = cgroupbpf.Mount(); err != nil {
			return err
		}
	}
	return cgroupbpf.Check(c.Cgroup)
}

// Start loads and attaches the programs with the rules of the
// current generation. Run starts following.
func Start(cfg Config) (_ *Follower, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	f := &Follower{cfg: cfg, nl: nft.Open(cfg.Target), byHash: map[[2]uint64][]plan.NameRule{}, live: map[string]map[netip.Addr]time.Time{},
		shares: map[uint32]*ebpf.Map{}}
	level, err := cgroupbpf.Level(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if level >= plan.FollowGateLevels {
		return nil, fmt.Errorf("cgroup %s is %d levels deep: the table's follow rules match at most %d", cfg.Cgroup, level, plan.FollowGateLevels-1)
	}
	if f.cgroupID, err = cgroupbpf.ID(cfg.Cgroup); err != nil {
		return nil, err
	}
	g, err := f.currentGeneration()
	if err != nil {
		return nil, err
	}
	spec, err := f.specOf(g)
	if err != nil {
		return nil, err
	}
	netns, err := enforcedNetns(cfg.Target)
	if err != nil {
		return nil, err
	}
	if spec != nil {
		if err := f.nl.CheckMarkUnused(cfg.Table, spec.Mark); err != nil {
			return nil, err
		}
	}
	if f.pinDir, err = pinDir(cfg.PinRoot, cfg.Table, netns); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = f.closeKernel(false)
		}
	}()
	if err := f.load(spec, netns); err != nil {
		return nil, err
	}
	if err := f.setResolvers(cfg.Resolvers); err != nil {
		return nil, err
	}
	if err := f.setRules(spec, generationNumber(g)); err != nil {
		return nil, err
	}
	if f.rd, err = ringbuf.NewReader(f.objs.FollowEvents); err != nil {
		return nil, fmt.Errorf("open follower ring buffer: %w", err)
	}
	if err := f.attachTakingPolicy(); err != nil {
		return nil, err
	}
	if spec != nil {
		f.refreshGate()
	}
	return f, nil
}

// Close stops following: it closes the gate (the table stops accepting
// the follow mark), then detaches the programs and frees the maps. The
// sockets' authorizations stay pinned for the next follower.
func (f *Follower) Close() error { return f.closeKernel(true) }

// currentGeneration is the target's current generation (nil: none).
func (f *Follower) currentGeneration() (*store.Generation, error) {
	if f.cfg.Store == nil {
		return nil, nil
	}
	return rollout.Current(f.cfg.Store, f.cfg.Target, f.cfg.Table)
}

func generationNumber(g *store.Generation) uint64 {
	if g == nil {
		return 0
	}
	return g.N
}

// specOf reads the follow rules of a generation's plan (nil for none).
func (f *Follower) specOf(g *store.Generation) (*plan.FollowSpec, error) {
	if g == nil || g.Mode == rollout.ModeRemoved {
		return nil, nil
	}
	f.planReads.Add(1)
	p, err := rollout.LoadPlan(f.cfg.Store, g.Effective())
	if err != nil {
		return nil, err
	}
	return p.Follow, nil
}

func (f *Follower) setResolvers(addrs []netip.Addr) error {
	for _, a := range addrs {
		a = a.Unmap()
		k := bpf.FollowResolverKey{Family: 4}
		if a.Is6() {
			k.Family = 6
		}
		copy(k.Addr[:], a.AsSlice())
		if err := f.objs.Resolvers.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("set resolver %s: %w", a, err)
		}
	}
	return nil
}

// setRules replaces the kernel's name rules with spec's.
func (f *Follower) setRules(spec *plan.FollowSpec, gen uint64) error {
	want := map[bpf.FollowRuleKey]*bpf.FollowRuleVal{}
	byHash := map[[2]uint64][]plan.NameRule{}
	uids := map[uint32]bool{}
	truncated := 0
	if spec != nil {
		for _, r := range spec.Rules {
			h := nameHash(r.Name)
			k := bpf.FollowRuleKey{Uid: r.UID, Hash: h}
			v, ok := want[k]
			if !ok {
				v = &bpf.FollowRuleVal{}
				want[k] = v
			}
			if int(v.Nports) == len(v.Ports) {
				truncated++
				continue
			}
			v.Ports[v.Nports].Proto, v.Ports[v.Nports].Port = r.Proto, r.Port
			v.Nports++
			byHash[[2]uint64{uint64(r.UID), h}] = append(byHash[[2]uint64{uint64(r.UID), h}], r)
			uids[r.UID] = true
		}
	}
	if truncated > 0 {
		f.cfg.Log.Warn("some users have a name on more ports than the kernel follows: those are not followed",
			"rules_left_out", truncated, "ports_per_name", len(bpf.FollowRuleVal{}.Ports))
	}
	if len(want) > f.sizes.rules {
		return fmt.Errorf("generation %d has %d name rules, more than the %d the follower's maps were sized for: restart the follower", gen, len(want), f.sizes.rules)
	}
	if err := f.setShares(uids); err != nil {
		return err
	}
	var k bpf.FollowRuleKey
	var v bpf.FollowRuleVal
	var stale []bpf.FollowRuleKey
	it := f.objs.Rules.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		_ = f.objs.Rules.Delete(k)
	}
	for k, v := range want {
		if err := f.objs.Rules.Put(k, v); err != nil {
			return fmt.Errorf("set name rule: %w", err)
		}
	}
	f.mu.Lock()
	f.spec, f.gen, f.byHash = spec, gen, byHash
	f.stats.Generation, f.stats.Rules = gen, 0
	if spec != nil {
		f.stats.Rules = len(spec.Rules)
	}
	f.mu.Unlock()
	return nil
}

// Stats reads the kernel's counters and the follower's own.
func (f *Follower) Stats() Stats {
	var k [15]uint64
	var per []uint64
	for i := range uint32(len(k)) {
		if err := f.objs.FollowStats.Lookup(i, &per); err == nil {
			for _, v := range per {
				k[i] += v
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Queries, s.Accepted, s.NotResolver, s.NoQuery, s.Mismatch = k[0], k[1], k[2], k[3], k[4]
	s.Malformed, s.NoRule, s.Authorized, s.Marked, s.Lost = k[5], k[6], k[7], k[8], k[9]
	s.OtherNetns, s.OwnerMismatch, s.OverShare, s.MarkDropped = k[10], k[11], k[12], k[13]
	s.FollowedFull = k[14]
	if n := len(f.latency); n > 0 {
		l := slices.Clone(f.latency)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		s.LatencyP50 = float64(l[n/2].Nanoseconds()) / 1e3
		s.LatencyP99 = float64(l[min(n-1, n*99/100)].Nanoseconds()) / 1e3
	}
	s.MarkRules = f.markRules()
	s.Updated = time.Now().UTC()
	return s
}

// markRules reads what the table's follow-mark rules accepted, from their
// kernel counters (nil: the table has none, or cannot be read).
func (f *Follower) markRules() *nft.Counter {
	st, err := f.nl.Counters(f.cfg.Table)
	if err != nil {
		return nil
	}
	return st.FollowMarkAccepted
}

// Run follows until ctx ends: it reads the answers the kernel used, adds
// their addresses to the sets, keeps the gate open, removes queries
// nobody answered, reloads the rules when a new generation is applied,
// and writes its counters to the store: after each batch of elements
// (before OnElement hears of them, so status is never behind what the
// follower printed) and every GateRefresh when they changed.
func (f *Follower) Run(ctx context.Context) error {
	if f.cfg.Ready != nil {
		close(f.cfg.Ready)
	}
	f.reports = make(chan []Address, 64)
	reported := make(chan struct{})
	go f.report(reported)
	errc := make(chan error, 1)
	go func() { errc <- f.readAnswers() }()
	defer func() {
		close(f.reports)
		<-reported
	}()
	tick := time.NewTicker(f.cfg.GateRefresh)
	defer tick.Stop()
	last := time.Now()
	var fullSaid uint64
	for {
		select {
		case <-ctx.Done():
			_ = f.rd.Close()
			<-errc
			f.saveStats()
			return nil
		case err := <-errc:
			return err
		case <-tick.C:
			if f.hasSpec() {
				f.refreshGate()
			}
			f.saveChanged()
			if time.Since(last) < f.cfg.Reload {
				continue
			}
			last = time.Now()
			f.reapQueries()
			f.reapFollowed()
			if full := f.Stats().FollowedFull; full > fullSaid {
				f.cfg.Log.Warn("addresses not authorized: the name check's view of followed destinations is full",
					"addresses", full-fullSaid, "bound", f.objs.Followed.MaxEntries())
				fullSaid = full
			}
			if err := f.reload(); err != nil {
				return err
			}
		}
	}
}

// report saves the counters, then hands each batch of elements to
// OnElement, until f.reports closes.
func (f *Follower) report(done chan<- struct{}) {
	defer close(done)
	for batch := range f.reports {
		// Everything queued meanwhile goes with one save.
		for more := true; more; {
			select {
			case b, ok := <-f.reports:
				if !ok {
					more = false
					break
				}
				batch = append(batch, b...)
			default:
				more = false
			}
		}
		f.saveStats()
		for _, e := range batch {
			f.cfg.OnElement(e)
		}
	}
}

// saveChanged saves the counters when they changed since the last save,
// or when the last save is older than statsMaxAge.
func (f *Follower) saveChanged() {
	f.saveIf(func(s, saved Stats) bool {
		return !s.sameCounters(saved) || time.Since(saved.Updated) >= statsMaxAge
	})
}

// statsMaxAge: an idle follower still saves its counters this often, so
// that their time says it runs.
const statsMaxAge = 10 * time.Second

func (f *Follower) hasSpec() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spec != nil
}

// reload loads the rules of a new generation; it reads the plan only when
// the generation changed, and once the kernel has its table.
func (f *Follower) reload() error {
	defer f.checks.Add(1)
	g, err := f.currentGeneration()
	if err != nil {
		f.cfg.Log.Warn("read the current generation", "err", err)
		return nil
	}
	f.mu.Lock()
	changed := generationNumber(g) != f.gen
	old := f.spec
	f.mu.Unlock()
	if !changed {
		return nil
	}
	if g != nil && g.State == store.GenApplying {
		// Recorded, but its plan is stored only once the kernel has
		// answered: the table in the kernel is still the one followed.
		f.cfg.Log.Debug("a new generation is being applied", "generation", g.N)
		return nil
	}
	spec, err := f.specOf(g)
	if err != nil {
		f.cfg.Log.Warn("read the plan of the current generation", "err", err)
		return nil
	}
	if spec != nil && old != nil && (spec.Mark != old.Mark || spec.TTLFloor != old.TTLFloor || spec.MaxTTL() != old.MaxTTL()) {
		f.cfg.Log.Warn("the new generation has another follow mark or TTL bounds: restart the follower to use them",
			"mark", fmt.Sprintf("0x%x", spec.Mark))
	}
	if err := f.setRules(spec, generationNumber(g)); err != nil {
		return err
	}
	if spec == nil {
		_ = f.closeGate()
	} else {
		f.refreshGate()
	}
	f.cfg.Log.Info("following the rules of a new generation", "generation", generationNumber(g), "rules", f.Stats().Rules)
	return nil
}

func (f *Follower) saveStats() { f.saveIf(func(Stats, Stats) bool { return true }) }

// saveIf reads the counters and saves them when need says so, given what
// was saved last. One save at a time, each of counters read after the
// last: the store never goes back to older ones.
func (f *Follower) saveIf(need func(s, saved Stats) bool) {
	if f.cfg.Store == nil {
		return
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	s := f.Stats()
	if !need(s, f.saved) {
		return
	}
	data, err := json.Marshal(s)
	if err == nil {
		err = f.cfg.Store.PutMeta(statsKey(f.cfg.Target, f.cfg.Table), data)
	}
	if err != nil {
		if !errors.Is(err, store.ErrBusy) {
			f.cfg.Log.Warn("save follower counters", "err", err)
		}
		return
	}
	f.saved = s
}

func (f *Follower) readAnswers() error {
	r := cgroupbpf.Ring{Reader: f.rd, Name: "follower"}
	return r.Each(func(raw []byte) {
		if len(raw) < int(unsafe.Sizeof(bpf.FollowFollowEvent{})) {
			return
		}
		e := (*bpf.FollowFollowEvent)(unsafe.Pointer(&raw[0]))
		var addrs []followedAddr
		for _, a := range e.Addrs[:min(int(e.Naddrs), len(e.Addrs))] {
			ip := netip.AddrFrom16(a.Addr)
			if a.Family == 4 {
				ip = netip.AddrFrom4([4]byte(a.Addr[:4]))
			}
			addrs = append(addrs, followedAddr{ip, a.Ttl})
		}
		f.answer(e.Uid, e.Hash, f.clk.Wall(e.Ts), addrs)
	})
}

// followedAddr is an address the kernel authorized, with its TTL.
type followedAddr struct {
	ip  netip.Addr
	ttl uint32
}

// answer adds the addresses the kernel authorized from one answer.
func (f *Follower) answer(uid uint32, hash uint64, at time.Time, addrs []followedAddr) {
	f.mu.Lock()
	rules := f.byHash[[2]uint64{uint64(uid), hash}]
	spec := f.spec
	f.mu.Unlock()
	if spec == nil || len(rules) == 0 {
		return // the rules changed meanwhile
	}
	// Which address to which set, for how long, within the bound.
	var add []nft.Followed
	var found []Address
	now := time.Now()
	f.mu.Lock()
	for _, a := range addrs {
		timeout := max(time.Duration(a.ttl)*time.Second, spec.TTLFloor)
		if timeout > spec.MaxTTL() {
			timeout = spec.MaxTTL()
			f.stats.TTLCapped++
		}
		// The rules of one (uid, hash) share the name: the bound counts
		// the name's addresses.
		ok, refresh := f.admit(rules[0], a.ip, now, timeout, spec.MaxPerName)
		if !ok {
			continue
		}
		for _, r := range rules {
			add = append(add, nft.Followed{Element: plan.Element{UID: uid, IP: a.ip, Proto: r.Proto, Port: r.Port}, Timeout: timeout})
			found = append(found, Address{UID: uid, Name: r.Name, IP: a.ip, Proto: r.Proto, Port: r.Port, Timeout: timeout, New: !refresh})
		}
	}
	f.mu.Unlock()
	if len(found) > 0 {
		f.commit(add, found, at)
	}
}

// admit notes ip as live for rule r until now+timeout; ok is false when
// the bound of addresses a name leaves it out. Called with f.mu held.
func (f *Follower) admit(r plan.NameRule, ip netip.Addr, now time.Time, timeout time.Duration, bound int) (ok, refresh bool) {
	key := fmt.Sprintf("%d %s", r.UID, r.Name)
	live := f.live[key]
	if live == nil {
		live = map[netip.Addr]time.Time{}
		f.live[key] = live
	}
	for a, exp := range live {
		if exp.Before(now) {
			delete(live, a)
		}
	}
	_, refresh = live[ip]
	if !refresh && len(live) >= bound {
		f.stats.BoundDropped++
		return false, false
	}
	live[ip] = now.Add(timeout)
	return true, refresh
}

// commit puts the elements in the sets and tells who wants to know.
func (f *Follower) commit(add []nft.Followed, found []Address, at time.Time) {
	if err := f.nl.AddFollowed(f.cfg.Table, add); err != nil {
		f.mu.Lock()
		f.stats.NftErrors++
		f.mu.Unlock()
		f.cfg.Log.Warn("add followed addresses", "err", err)
		return
	}
	lat := time.Since(at)
	f.mu.Lock()
	for i := range found {
		found[i].Latency = lat
		if found[i].New {
			f.stats.Added++
		} else {
			f.stats.Refreshed++
		}
	}
	f.latency = append(f.latency, lat)
	if len(f.latency) > 10000 {
		f.latency = f.latency[len(f.latency)-10000:]
	}
	f.mu.Unlock()
	if f.cfg.OnElement == nil {
		return
	}
	select {
	case f.reports <- found: // saved, then reported
	default: // the store is slow: report now, save at the next tick
		for _, e := range found {
			f.cfg.OnElement(e)
		}
	}
}
