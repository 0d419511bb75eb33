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
	"github.com/egresskit/egress/internal/dnsanswer"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/store"
)

// The follower keeps name rules true to DNS. Its eBPF programs (see
// bpf/follow.c) check every answer in the kernel (a configured resolver,
// port 53, a query with that id and question from the same socket),
// authorize the answer's addresses for the asking user before the
// application can read them, and mark the sockets that connect to them;
// the table accepts marked packets. In user space the follower then adds
// the addresses to the nftables timeout sets for max(TTL, floor): the sets
// are what lasts, the mark only bridges the moments before the element is
// in.

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
	Log    *slog.Logger
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
	Queries      uint64 `json:"queries"`
	Accepted     uint64 `json:"answers_used"`
	NotResolver  uint64 `json:"ignored_not_resolver"`
	NoQuery      uint64 `json:"ignored_no_query"`
	Mismatch     uint64 `json:"ignored_question_mismatch"`
	Malformed    uint64 `json:"ignored_malformed"`
	NoRule       uint64 `json:"not_followed"`
	Authorized   uint64 `json:"authorized"`
	Marked       uint64 `json:"connects_marked"`
	Lost         uint64 `json:"lost"`
	Added        uint64 `json:"elements_added"`
	Refreshed    uint64 `json:"elements_refreshed"`
	BoundDropped uint64 `json:"dropped_by_bound"`
	NftErrors    uint64 `json:"nft_errors"`
	Generation   uint64 `json:"generation"`
	Rules        int    `json:"rules"`
	// Latency quantiles of answer-to-element, in microseconds.
	LatencyP50 float64   `json:"latency_p50_us"`
	LatencyP99 float64   `json:"latency_p99_us"`
	Updated    time.Time `json:"updated"`
}

// Ignored is every answer the follower did not use because it did not
// trust it.
func (s FollowStats) Ignored() uint64 { return s.NotResolver + s.NoQuery + s.Mismatch + s.Malformed }

// nameHash is the hash the kernel computes of a question name (FNV-1a 64
// of the lower-case name without a trailing dot, or of "*.suffix").
func nameHash(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(strings.ToLower(strings.TrimSuffix(name, "."))))
	return h.Sum64()
}

// Follower is a running follower.
type Follower struct {
	cfg   FollowConfig
	objs  bpf.FollowObjects
	links []link.Link
	rd    *ringbuf.Reader
	clk   learn.BootClock // owned by readAnswers

	mu      sync.Mutex
	spec    *FollowSpec
	gen     uint64
	byHash  map[[2]uint64][]NameRule // (uid, hash) -> rules
	live    map[string]map[netip.Addr]time.Time
	stats   FollowStats
	latency []time.Duration
}

// StartFollower loads and attaches the programs with the rules of the
// current generation. Run starts following.
func StartFollower(cfg FollowConfig) (_ *Follower, err error) {
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Second
	}
	if cfg.Reload <= 0 {
		cfg.Reload = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Cgroup == "" {
		if cfg.Cgroup, err = learn.Cgroup2Mount(); err != nil {
			return nil, err
		}
	}
	if err := learn.CheckCgroup(cfg.Cgroup); err != nil {
		return nil, err
	}
	f := &Follower{cfg: cfg, byHash: map[[2]uint64][]NameRule{}, live: map[string]map[netip.Addr]time.Time{}}
	spec, gen, err := f.currentSpec()
	if err != nil {
		return nil, err
	}
	mark, floor := uint32(DefaultFollowMark), DefaultTTLFloor
	if spec != nil {
		mark, floor = spec.Mark, spec.TTLFloor
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	s, err := bpf.LoadFollow()
	if err != nil {
		return nil, fmt.Errorf("load follower spec: %w", err)
	}
	for name, v := range map[string]any{"follow_mark": mark, "window_ns": uint64(cfg.Window), "floor_ns": uint64(floor)} {
		if err := s.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	if err := s.LoadAndAssign(&f.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load follower programs: %+v", verr)
		}
		return nil, fmt.Errorf("load follower programs: %w", err)
	}
	if err := f.setResolvers(cfg.Resolvers); err != nil {
		return nil, err
	}
	if err := f.setRules(spec, gen); err != nil {
		return nil, err
	}
	if f.rd, err = ringbuf.NewReader(f.objs.FollowEvents); err != nil {
		return nil, fmt.Errorf("open follower ring buffer: %w", err)
	}
	if f.links, err = learn.AttachCgroup(cfg.Cgroup, []learn.Attachment{
		{Name: "query egress", Type: ebpf.AttachCGroupInetEgress, Program: f.objs.FollowQuery},
		{Name: "answer ingress", Type: ebpf.AttachCGroupInetIngress, Program: f.objs.FollowAnswer},
		{Name: "connect4", Type: ebpf.AttachCGroupInet4Connect, Program: f.objs.FollowConnect4},
		{Name: "connect6", Type: ebpf.AttachCGroupInet6Connect, Program: f.objs.FollowConnect6},
	}); err != nil {
		return nil, err
	}
	return f, nil
}

// Close detaches the programs and frees the maps.
func (f *Follower) Close() error {
	var errs []error
	for _, l := range f.links {
		errs = append(errs, l.Close())
	}
	f.links = nil
	if f.rd != nil {
		errs = append(errs, f.rd.Close())
	}
	errs = append(errs, f.objs.Close())
	return errors.Join(errs...)
}

// currentSpec reads the follow rules of the target's current generation.
func (f *Follower) currentSpec() (*FollowSpec, uint64, error) {
	if f.cfg.Store == nil {
		return nil, 0, nil
	}
	gens, cur, err := History(f.cfg.Store, f.cfg.Target, f.cfg.Table)
	if err != nil || cur == 0 {
		return nil, 0, err
	}
	for _, g := range gens {
		if g.N != cur {
			continue
		}
		if g.Mode == ModeRemoved {
			return nil, cur, nil
		}
		p, err := loadPlan(f.cfg.Store, g.Effective())
		if err != nil {
			return nil, 0, err
		}
		return p.Follow, cur, nil
	}
	return nil, cur, nil
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
	if spec != nil {
		for _, r := range spec.Rules {
			h := nameHash(r.Name)
			k := bpf.FollowRuleKey{Uid: r.UID, Hash: h}
			v, ok := want[k]
			if !ok {
				v = &bpf.FollowRuleVal{}
				want[k] = v
			}
			if int(v.Nports) < len(v.Ports) {
				v.Ports[v.Nports].Proto, v.Ports[v.Nports].Port = r.Proto, r.Port
				v.Nports++
			}
			byHash[[2]uint64{uint64(r.UID), h}] = append(byHash[[2]uint64{uint64(r.UID), h}], r)
		}
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
	var k [10]uint64
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
// their addresses to the sets, reloads the rules when a new generation is
// applied, and writes its counters to the store.
func (f *Follower) Run(ctx context.Context) error {
	if f.cfg.Ready != nil {
		close(f.cfg.Ready)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.readAnswers() }()
	tick := time.NewTicker(f.cfg.Reload)
	defer tick.Stop()
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
			spec, gen, err := f.currentSpec()
			if err != nil {
				f.cfg.Log.Warn("read the current generation", "err", err)
				continue
			}
			f.mu.Lock()
			changed := gen != f.gen
			old := f.spec
			f.mu.Unlock()
			if changed {
				if spec != nil && old != nil && spec.Mark != old.Mark {
					f.cfg.Log.Warn("the new generation has another follow mark: restart the follower", "mark", fmt.Sprintf("0x%x", spec.Mark))
				}
				if err := f.setRules(spec, gen); err != nil {
					return err
				}
				f.cfg.Log.Info("following the rules of a new generation", "generation", gen, "rules", f.Stats().Rules)
			}
			f.saveStats()
		}
	}
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
		if len(rec.RawSample) < int(unsafe.Offsetof(bpf.FollowFollowEvent{}.Data)) {
			continue
		}
		e := (*bpf.FollowFollowEvent)(unsafe.Pointer(&rec.RawSample[0]))
		n := min(int(e.Len), len(e.Data))
		f.answer(e.Uid, e.Hash, f.clk.Wall(e.Ts), e.Data[:n], int(e.OrigLen))
	}
}

// answer adds the addresses of one answer the kernel used.
func (f *Follower) answer(uid uint32, hash uint64, at time.Time, payload []byte, origLen int) {
	ans, err := dnsanswer.Parse(payload, origLen)
	if err != nil {
		f.cfg.Log.Debug("parse a used answer", "err", err)
		return
	}
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
	for _, a := range ans.Addrs {
		timeout := max(time.Duration(a.TTL)*time.Second, spec.TTLFloor)
		for _, r := range rules {
			key := fmt.Sprintf("%d %s", r.UID, r.Name)
			live := f.live[key]
			if live == nil {
				live = map[netip.Addr]time.Time{}
				f.live[key] = live
			}
			for ip, exp := range live {
				if exp.Before(now) {
					delete(live, ip)
				}
			}
			_, refresh := live[a.IP]
			if !refresh && len(live) >= spec.MaxPerName {
				f.stats.BoundDropped++
				continue
			}
			live[a.IP] = now.Add(timeout)
			el := nftables.SetElement{Key: elementKey(Element{UID: uid, IP: a.IP, Proto: r.Proto, Port: r.Port}), Timeout: timeout}
			if a.IP.Is4() {
				add4 = append(add4, el)
			} else {
				add6 = append(add6, el)
			}
			found = append(found, FollowedElement{UID: uid, Name: r.Name, IP: a.IP, Proto: r.Proto, Port: r.Port, Timeout: timeout, New: !refresh})
		}
	}
	f.mu.Unlock()
	if len(found) == 0 {
		return
	}
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
	descFollowElements = prometheus.NewDesc("egress_follow_elements_total",
		"Addresses added to or refreshed in the follow sets, or left out by the per-name bound.", []string{"result"}, nil)
	descFollowMarked = prometheus.NewDesc("egress_follow_connects_marked_total",
		"Connects let through by the follow mark before their set element was in.", nil, nil)
	descFollowLatency = prometheus.NewDesc("egress_follow_latency_seconds",
		"Time from a DNS answer reaching the host to its addresses being in the set.", []string{"quantile"}, nil)
)

// Describe sends the descriptions.
func (c FollowCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFollowAnswers, descFollowElements, descFollowMarked, descFollowLatency} {
		ch <- d
	}
}

// Collect reads the follower's counters.
func (c FollowCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.F.Stats()
	cv := prometheus.CounterValue
	for outcome, n := range map[string]uint64{"used": s.Accepted, "not_resolver": s.NotResolver, "no_query": s.NoQuery,
		"question_mismatch": s.Mismatch, "malformed": s.Malformed, "not_followed": s.NoRule} {
		ch <- prometheus.MustNewConstMetric(descFollowAnswers, cv, float64(n), outcome)
	}
	for result, n := range map[string]uint64{"added": s.Added, "refreshed": s.Refreshed, "dropped_by_bound": s.BoundDropped, "error": s.NftErrors} {
		ch <- prometheus.MustNewConstMetric(descFollowElements, cv, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(descFollowMarked, cv, float64(s.Marked))
	ch <- prometheus.MustNewConstMetric(descFollowLatency, prometheus.GaugeValue, s.LatencyP50/1e6, "0.5")
	ch <- prometheus.MustNewConstMetric(descFollowLatency, prometheus.GaugeValue, s.LatencyP99/1e6, "0.99")
}
