//go:build linux

package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/learn"
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

// FollowConfig configures the follower.
type FollowConfig struct {
	// Cgroup is the cgroup v2 directory whose sockets are followed.
	Cgroup string
	Target Target
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
	OnElement func(FollowedElement)
	// Ready is closed once the programs are attached (optional).
	Ready chan<- struct{}
}

// FollowedElement is an address a DNS answer gave for a followed name.
type FollowedElement struct {
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

// FollowStats are the follower's counters.
type FollowStats struct {
	Queries     uint64 `json:"queries"`
	Accepted    uint64 `json:"answers_used"`
	NotResolver uint64 `json:"ignored_not_resolver"`
	NoQuery     uint64 `json:"ignored_no_query"`
	Mismatch    uint64 `json:"ignored_question_mismatch"`
	Malformed   uint64 `json:"ignored_malformed"`
	OtherNetns  uint64 `json:"ignored_other_netns"`
	NoRule      uint64 `json:"not_followed"`
	// OwnerMismatch counts address records left out of used answers:
	// their owner is not the question or a name of its CNAME chain.
	OwnerMismatch uint64 `json:"records_owner_mismatch"`
	// OverShare counts queries the kernel did not remember because their
	// user's share of the query table was full; QueriesExpired those
	// removed unanswered after QueryLife.
	OverShare      uint64 `json:"queries_over_share"`
	QueriesExpired uint64 `json:"queries_expired"`
	Authorized     uint64 `json:"authorized"`
	Marked         uint64 `json:"connects_marked"`
	// MarkDropped counts packets carrying the follow mark that the mark
	// check dropped: set by their process, or sent elsewhere than the
	// destination their socket was marked for.
	MarkDropped  uint64 `json:"mark_dropped"`
	Lost         uint64 `json:"lost"`
	Added        uint64 `json:"elements_added"`
	Refreshed    uint64 `json:"elements_refreshed"`
	BoundDropped uint64 `json:"dropped_by_bound"`
	// TTLCapped counts addresses whose TTL was above follow_ttl_max.
	TTLCapped  uint64 `json:"ttl_capped"`
	NftErrors  uint64 `json:"nft_errors"`
	Generation uint64 `json:"generation"`
	Rules      int    `json:"rules"`
	// Latency quantiles of answer-to-element, in microseconds.
	LatencyP50 float64   `json:"latency_p50_us"`
	LatencyP99 float64   `json:"latency_p99_us"`
	Updated    time.Time `json:"updated"`
}

// Ignored is every answer the follower did not use because it did not
// trust it.
func (s FollowStats) Ignored() uint64 {
	return s.NotResolver + s.NoQuery + s.Mismatch + s.Malformed + s.OtherNetns
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
	cfg       FollowConfig
	objs      bpf.FollowObjects
	check     link.Link // the mark check, pinned
	links     []link.Link
	rd        *ringbuf.Reader
	clk       learn.BootClock // owned by readAnswers
	pinDir    string
	cgroupID  uint64
	sizes     followSizes
	shareSpec *ebpf.MapSpec
	shares    map[uint32]*ebpf.Map // owned by Run (and StartFollower)
	// gateFailing: the last refresh of the gate failed (said once).
	gateFailing bool

	mu      sync.Mutex
	spec    *FollowSpec
	gen     uint64
	byHash  map[[2]uint64][]NameRule // (uid, hash) -> rules
	live    map[string]map[netip.Addr]time.Time
	stats   FollowStats
	latency []time.Duration
}

func (c *FollowConfig) defaults() error {
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
		if c.Cgroup, err = learn.Cgroup2Mount(); err != nil {
			return err
		}
	}
	return learn.CheckCgroup(c.Cgroup)
}

// StartFollower loads and attaches the programs with the rules of the
// current generation. Run starts following.
func StartFollower(cfg FollowConfig) (_ *Follower, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	f := &Follower{cfg: cfg, byHash: map[[2]uint64][]NameRule{}, live: map[string]map[netip.Addr]time.Time{},
		shares: map[uint32]*ebpf.Map{}}
	level, err := cgroupLevel(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if level >= FollowGateLevels {
		return nil, fmt.Errorf("cgroup %s is %d levels deep: the table's follow rules match at most %d", cfg.Cgroup, level, FollowGateLevels-1)
	}
	if f.cgroupID, err = learn.CgroupID(cfg.Cgroup); err != nil {
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
		if err := CheckMarkUnused(cfg.Target, cfg.Table, spec.Mark); err != nil {
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
	if err := f.attach(); err != nil {
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
	gens, cur, err := History(f.cfg.Store, f.cfg.Target, f.cfg.Table)
	if err != nil || cur == 0 {
		return nil, err
	}
	for i := range gens {
		if gens[i].N == cur {
			return &gens[i], nil
		}
	}
	return nil, nil
}

func generationNumber(g *store.Generation) uint64 {
	if g == nil {
		return 0
	}
	return g.N
}

// specOf reads the follow rules of a generation's plan (nil for none).
func (f *Follower) specOf(g *store.Generation) (*FollowSpec, error) {
	if g == nil || g.Mode == ModeRemoved {
		return nil, nil
	}
	p, err := loadPlan(f.cfg.Store, g.Effective())
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
func (f *Follower) setRules(spec *FollowSpec, gen uint64) error {
	want := map[bpf.FollowRuleKey]*bpf.FollowRuleVal{}
	byHash := map[[2]uint64][]NameRule{}
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
func (f *Follower) Stats() FollowStats {
	var k [14]uint64
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
	if n := len(f.latency); n > 0 {
		l := slices.Clone(f.latency)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		s.LatencyP50 = float64(l[n/2].Nanoseconds()) / 1e3
		s.LatencyP99 = float64(l[min(n-1, n*99/100)].Nanoseconds()) / 1e3
	}
	s.Updated = time.Now().UTC()
	return s
}

// Run follows until ctx ends: it reads the answers the kernel used, adds
// their addresses to the sets, keeps the gate open, removes queries
// nobody answered, reloads the rules when a new generation is applied,
// and writes its counters to the store.
func (f *Follower) Run(ctx context.Context) error {
	if f.cfg.Ready != nil {
		close(f.cfg.Ready)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.readAnswers() }()
	tick := time.NewTicker(f.cfg.GateRefresh)
	defer tick.Stop()
	last := time.Now()
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
			if time.Since(last) < f.cfg.Reload {
				continue
			}
			last = time.Now()
			f.reapQueries()
			if err := f.reload(); err != nil {
				return err
			}
			f.saveStats()
		}
	}
}

func (f *Follower) hasSpec() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spec != nil
}

// reload loads the rules of a new generation; it reads the plan only when
// the generation changed.
func (f *Follower) reload() error {
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
	spec, err := f.specOf(g)
	if err != nil {
		f.cfg.Log.Warn("read the plan of the current generation", "err", err)
		return nil
	}
	if spec != nil && old != nil && (spec.Mark != old.Mark || spec.TTLFloor != old.TTLFloor || spec.ttlMax() != old.ttlMax()) {
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

func (f *Follower) saveStats() {
	if f.cfg.Store == nil {
		return
	}
	data, err := json.Marshal(f.Stats())
	if err == nil {
		err = f.cfg.Store.PutMeta(followStatsKey(f.cfg.Target, f.cfg.Table), data)
	}
	if err != nil && !errors.Is(err, store.ErrBusy) {
		f.cfg.Log.Warn("save follower counters", "err", err)
	}
}

func followStatsKey(t Target, table string) string { return "follow-stats " + t.Path() + " " + table }

// ReadFollowStats returns the counters the follower of the target last
// saved, if any.
func ReadFollowStats(st *store.Store, t Target, table string) (*FollowStats, error) {
	data, err := st.GetMeta(followStatsKey(t, table))
	if err != nil || data == nil {
		return nil, err
	}
	var s FollowStats
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode follower counters: %w", err)
	}
	return &s, nil
}

func (f *Follower) readAnswers() error {
	var rec ringbuf.Record
	for {
		if err := f.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read follower ring buffer: %w", err)
		}
		if len(rec.RawSample) < int(unsafe.Sizeof(bpf.FollowFollowEvent{})) {
			continue
		}
		e := (*bpf.FollowFollowEvent)(unsafe.Pointer(&rec.RawSample[0]))
		var addrs []followedAddr
		for _, a := range e.Addrs[:min(int(e.Naddrs), len(e.Addrs))] {
			ip := netip.AddrFrom16(a.Addr)
			if a.Family == 4 {
				ip = netip.AddrFrom4([4]byte(a.Addr[:4]))
			}
			addrs = append(addrs, followedAddr{ip, a.Ttl})
		}
		f.answer(e.Uid, e.Hash, f.clk.Wall(e.Ts), addrs)
	}
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
	var add4, add6 []nftables.SetElement
	var found []FollowedElement
	now := time.Now()
	f.mu.Lock()
	for _, a := range addrs {
		timeout := max(time.Duration(a.ttl)*time.Second, spec.TTLFloor)
		if timeout > spec.ttlMax() {
			timeout = spec.ttlMax()
			f.stats.TTLCapped++
		}
		// The rules of one (uid, hash) share the name: the bound counts
		// the name's addresses.
		ok, refresh := f.admit(rules[0], a.ip, now, timeout, spec.MaxPerName)
		if !ok {
			continue
		}
		for _, r := range rules {
			el := nftables.SetElement{Key: elementKey(Element{UID: uid, IP: a.ip, Proto: r.Proto, Port: r.Port}), Timeout: timeout}
			if a.ip.Is4() {
				add4 = append(add4, el)
			} else {
				add6 = append(add6, el)
			}
			found = append(found, FollowedElement{UID: uid, Name: r.Name, IP: a.ip, Proto: r.Proto, Port: r.Port, Timeout: timeout, New: !refresh})
		}
	}
	f.mu.Unlock()
	if len(found) > 0 {
		f.commit(add4, add6, found, at)
	}
}

// admit notes ip as live for rule r until now+timeout; ok is false when
// the bound of addresses a name leaves it out. Called with f.mu held.
func (f *Follower) admit(r NameRule, ip netip.Addr, now time.Time, timeout time.Duration, bound int) (ok, refresh bool) {
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
func (f *Follower) commit(add4, add6 []nftables.SetElement, found []FollowedElement, at time.Time) {
	if err := f.addElements(add4, add6); err != nil {
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
	if f.cfg.OnElement != nil {
		for _, e := range found {
			f.cfg.OnElement(e)
		}
	}
}

// addElements adds (or refreshes) elements of the follow sets in one
// transaction.
func (f *Follower) addElements(add4, add6 []nftables.SetElement) error {
	c, done, err := f.cfg.Target.conn()
	if err != nil {
		return err
	}
	defer done()
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: f.cfg.Table}
	for _, s := range []struct {
		name   string
		family int
		elems  []nftables.SetElement
	}{{SetFollow4, 4, add4}, {SetFollow6, 6, add6}} {
		if len(s.elems) == 0 {
			continue
		}
		set := &nftables.Set{Table: t, Name: s.name, KeyType: setKeyType(s.family), Concatenation: true, HasTimeout: true}
		if err := c.SetAddElements(set, s.elems); err != nil {
			return err
		}
	}
	return c.Flush()
}

// FollowCollector exposes a follower's counters as Prometheus metrics.
type FollowCollector struct{ F *Follower }

var (
	descFollowAnswers = prometheus.NewDesc("egress_follow_answers_total",
		"DNS answers the follower saw, by outcome: used, or ignored and why.", []string{"outcome"}, nil)
	descFollowRecords = prometheus.NewDesc("egress_follow_records_owner_mismatch_total",
		"Address records of used answers left out: their owner is not the question or a name of its CNAME chain.", nil, nil)
	descFollowQueries = prometheus.NewDesc("egress_follow_queries_total",
		"DNS queries of users with name rules: remembered, refused because the user's share of the query table was full, or expired unanswered.", []string{"result"}, nil)
	descFollowElements = prometheus.NewDesc("egress_follow_elements_total",
		"Addresses added to or refreshed in the follow sets, left out by the per-name bound, or with a TTL capped by follow_ttl_max.", []string{"result"}, nil)
	descFollowMarked = prometheus.NewDesc("egress_follow_connects_marked_total",
		"Connects let through by the follow mark before their set element was in.", nil, nil)
	descFollowMarkDropped = prometheus.NewDesc("egress_follow_mark_dropped_total",
		"Packets carrying the follow mark that the kernel dropped: no authorization of their socket covers their destination.", nil, nil)
	descFollowLatency = prometheus.NewDesc("egress_follow_latency_seconds",
		"Time from a DNS answer reaching the host to its addresses being in the set.", []string{"quantile"}, nil)
)

// Describe sends the descriptions.
func (c FollowCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFollowAnswers, descFollowRecords, descFollowQueries, descFollowElements,
		descFollowMarked, descFollowMarkDropped, descFollowLatency} {
		ch <- d
	}
}

// Collect reads the follower's counters.
func (c FollowCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.F.Stats()
	cv := prometheus.CounterValue
	for outcome, n := range map[string]uint64{"used": s.Accepted, "not_resolver": s.NotResolver, "no_query": s.NoQuery,
		"question_mismatch": s.Mismatch, "malformed": s.Malformed, "other_netns": s.OtherNetns, "not_followed": s.NoRule} {
		ch <- prometheus.MustNewConstMetric(descFollowAnswers, cv, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(descFollowRecords, cv, float64(s.OwnerMismatch))
	for result, n := range map[string]uint64{"remembered": s.Queries, "over_share": s.OverShare, "expired": s.QueriesExpired} {
		ch <- prometheus.MustNewConstMetric(descFollowQueries, cv, float64(n), result)
	}
	for result, n := range map[string]uint64{"added": s.Added, "refreshed": s.Refreshed, "dropped_by_bound": s.BoundDropped,
		"ttl_capped": s.TTLCapped, "error": s.NftErrors} {
		ch <- prometheus.MustNewConstMetric(descFollowElements, cv, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(descFollowMarked, cv, float64(s.Marked))
	ch <- prometheus.MustNewConstMetric(descFollowMarkDropped, cv, float64(s.MarkDropped))
	ch <- prometheus.MustNewConstMetric(descFollowLatency, prometheus.GaugeValue, s.LatencyP50/1e6, "0.5")
	ch <- prometheus.MustNewConstMetric(descFollowLatency, prometheus.GaugeValue, s.LatencyP99/1e6, "0.99")
}
