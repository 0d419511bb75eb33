//go:build linux

package learn

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/internal/dnsanswer"
)

// Kernel record flags, as in bpf/egress.c.
const (
	eventInMap   = 1
	eventCounted = 2
)

// Indexes of the kernel's stats map, as in bpf/egress.c.
const (
	statEventsLost = iota
	statNotifyLost
	statDNSLost
	statDNSErrors
	statMapFull
	statUDPUnsent
	statQueryLost
	statMax
)

// ProbeOptions tune the kernel side of the learner.
type ProbeOptions struct {
	// FlowMapSize is the number of distinct flows counted in the kernel per
	// drain interval; flows beyond it are recorded one record per attempt.
	FlowMapSize uint32
	// WakeupBytes: the reader is woken when this much data waits in the
	// ring buffer, and polls every PollInterval otherwise. 0 wakes it for
	// every record.
	WakeupBytes  uint32
	PollInterval time.Duration
	// EventRingBytes sizes the event ring buffer (a power of two, at
	// least a page); 0 keeps the default of 4 MiB.
	EventRingBytes uint32
	// PerEvent turns in-kernel counting off: every attempt is a record.
	// Only for comparison in benchmarks.
	PerEvent bool
	// UDPAtEgress counts unconnected UDP datagrams in the egress program,
	// one hit a datagram that leaves, and leaves the sendmsg4/sendmsg6
	// programs unattached (the kernel locks the socket around them for
	// every unconnected datagram). A socket's repeats of its flow in a
	// drain interval are counted in a slot of a map swapped and read
	// with the flow map (slotMaps).
	UDPAtEgress bool
	// DNSQueries bounds the table of DNS queries waiting for their answer
	// (default 8192); DNSQueryShare bounds one user's part of it (default
	// an eighth); a query unanswered after DNSQueryTTL (default 30s) is
	// forgotten.
	DNSQueries    int
	DNSQueryShare int
	DNSQueryTTL   time.Duration
	// Names, when set, is the name check's learning program (loaded, not
	// attached: namecheck.Config.NoAttach): the egress program passes it
	// the TCP segments that may carry data, by a tail call, from the
	// attach on (see SetNames).
	Names *ebpf.Program
}

func (o *ProbeOptions) defaults() {
	if o.FlowMapSize == 0 {
		o.FlowMapSize = 65536
	}
	if o.PollInterval == 0 {
		o.PollInterval = 100 * time.Millisecond
	}
}

// DefaultProbeOptions are the options egress-learn runs with.
func DefaultProbeOptions() ProbeOptions {
	return ProbeOptions{FlowMapSize: 65536, WakeupBytes: 256 << 10, PollInterval: 100 * time.Millisecond}
}

// Attempt is one or more connection attempts of one flow, as the kernel
// counted them.
type Attempt struct {
	CgroupID uint64
	UID      uint32
	GID      uint32
	TGID     uint32
	// Comm is the process's name (the kernel's comm: at most 15
	// characters, and the process may set it); Exe the name of the file it
	// runs ("" when the kernel could not read it).
	Comm   string
	Exe    string
	Proto  uint8
	IP     netip.Addr
	Port   uint16
	Cookie uint64
	Hits   uint64
	First  time.Time
	Last   time.Time
}

// DNSPacket is a DNS answer received by a socket of the cgroup, which
// answers a query that socket sent: same id, same question, from the
// server the query went to (see DNSMatchStats).
type DNSPacket struct {
	Time    time.Time
	Cookie  uint64
	UID     uint32
	Src     netip.AddrPort
	Dst     netip.AddrPort
	Payload []byte // at most 4096 bytes
	OrigLen int    // the real payload length
}

// ProbeStats are the kernel's counters.
type ProbeStats struct {
	EventsLost uint64 // attempts neither counted nor recorded: lost
	NotifyLost uint64 // new-flow records dropped; their hits are counted
	DNSLost    uint64 // DNS answers dropped: ring buffer full
	DNSErrors  uint64 // DNS answers that could not be copied
	MapFull    uint64 // attempts recorded one by one: flow map full
	UDPUnsent  uint64 // connected UDP sockets that connected again before sending
	// DNSQueryLost counts DNS queries the kernel could not deliver (ring
	// buffer full); their answers are ignored.
	DNSQueryLost uint64
	// DNS is what the reader did with the queries and answers.
	DNS DNSMatchStats
}

// Lost is every record the kernel could not deliver.
func (s ProbeStats) Lost() uint64 { return s.EventsLost + s.NotifyLost }

// Probe is the loaded and attached eBPF side of the learner.
type Probe struct {
	objs   bpf.EgressObjects
	links  []link.Link
	active *ebpf.Map     // the flow map the programs count in
	spare  *ebpf.Map     // the empty one, swapped in at the next drain
	slots  *slotMaps     // UDPAtEgress, nil otherwise
	last   *lastFlowMaps // nil with PerEvent
	events *ringbuf.Reader
	dns    *ringbuf.Reader
	opts   ProbeOptions

	closeOnce  sync.Once
	closeErr   error
	stopping   atomic.Bool
	drainMu    sync.Mutex
	dnsMu      sync.Mutex // guards queries
	queries    *queryTable
	keys       []bpf.EgressFlowKey
	vals       []bpf.EgressFlowVal
	drainNames names
}

// OpenProbe loads the programs and attaches them to the cgroup v2
// directory at path.
func OpenProbe(path string, opts ProbeOptions) (p *Probe, err error) {
	opts.defaults()
	if err := cgroupbpf.Check(path); err != nil {
		return nil, err
	}
	_ = rlimit.RemoveMemlock() // only needed before memcg accounting (5.11)

	spec, err := bpf.LoadEgress()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	spec.Maps[bpf.EgressMapFlows].InnerMap.MaxEntries = opts.FlowMapSize
	if opts.EventRingBytes > 0 {
		spec.Maps[bpf.EgressMapEvents].MaxEntries = opts.EventRingBytes
	}
	if err := spec.Variables["wakeup_bytes"].Set(opts.WakeupBytes); err != nil {
		return nil, fmt.Errorf("set wakeup_bytes: %w", err)
	}
	agg := uint8(1)
	if opts.PerEvent {
		agg = 0
	}
	if err := spec.Variables["aggregate"].Set(agg); err != nil {
		return nil, fmt.Errorf("set aggregate: %w", err)
	}
	if err := spec.Variables["udp_at_egress"].Set(opts.UDPAtEgress); err != nil {
		return nil, fmt.Errorf("set udp_at_egress: %w", err)
	}

	p = &Probe{opts: opts, queries: newQueryTable(opts.DNSQueries, opts.DNSQueryShare, opts.DNSQueryTTL)}
	opened := p // a return with an error sets p to nil
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	if err := cgroupbpf.Load(spec, &p.objs, nil, "bpf programs"); err != nil {
		return nil, err
	}
	inner := spec.Maps[bpf.EgressMapFlows].InnerMap
	if p.active, err = ebpf.NewMap(inner); err != nil {
		return nil, fmt.Errorf("create flow map: %w", err)
	}
	if p.spare, err = ebpf.NewMap(inner); err != nil {
		return nil, fmt.Errorf("create flow map: %w", err)
	}
	if !opts.PerEvent {
		if err := p.objs.Flows.Put(uint32(0), p.active); err != nil {
			return nil, fmt.Errorf("install flow map: %w", err)
		}
	}
	if !opts.PerEvent {
		if p.last, err = newLastFlowMaps(spec.Maps[bpf.EgressMapLastFlows].InnerMap, p.objs.LastFlows); err != nil {
			return nil, err
		}
	}
	if opts.UDPAtEgress && !opts.PerEvent {
		if p.slots, err = newSlotMaps(spec.Maps[bpf.EgressMapSlots].InnerMap, p.objs.Slots); err != nil {
			return nil, err
		}
	}
	if opts.Names != nil {
		if err := p.SetNames(opts.Names); err != nil {
			return nil, err
		}
	}
	if p.events, err = ringbuf.NewReader(p.objs.Events); err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	if p.dns, err = ringbuf.NewReader(p.objs.DnsEvents); err != nil {
		return nil, fmt.Errorf("open dns ring buffer: %w", err)
	}

	if p.links, err = cgroupbpf.Attach(path, p.attachments()); err != nil {
		return nil, err
	}
	p.drainNames = names{}
	p.keys = make([]bpf.EgressFlowKey, 1024)
	p.vals = make([]bpf.EgressFlowVal, 1024)
	return p, nil
}

// attachments are the programs the probe attaches: the sendmsg ones
// only when unconnected UDP is counted there (not UDPAtEgress).
func (p *Probe) attachments() []cgroupbpf.Attachment {
	a := []cgroupbpf.Attachment{
		{Name: "connect4", Type: ebpf.AttachCGroupInet4Connect, Program: p.objs.EgressConnect4},
		{Name: "connect6", Type: ebpf.AttachCGroupInet6Connect, Program: p.objs.EgressConnect6},
		{Name: "sendmsg4", Type: ebpf.AttachCGroupUDP4Sendmsg, Program: p.objs.EgressSendmsg4},
		{Name: "sendmsg6", Type: ebpf.AttachCGroupUDP6Sendmsg, Program: p.objs.EgressSendmsg6},
		{Name: "egress", Type: ebpf.AttachCGroupInetEgress, Program: p.objs.EgressOut},
		{Name: "dns ingress", Type: ebpf.AttachCGroupInetIngress, Program: p.objs.EgressDns},
	}
	if p.opts.UDPAtEgress {
		a = slices.Delete(a, 2, 4)
	}
	return a
}

// SetNames makes the probe's egress program pass TCP segments that may
// carry data to prog (the name check's learning program, loaded but not
// attached: namecheck.Config.NoAttach), by a tail call. nil takes it
// out: the names are no longer recorded.
func (p *Probe) SetNames(prog *ebpf.Program) error {
	if prog == nil {
		if err := p.objs.NamesProg.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove the name check's program: %w", err)
		}
		return nil
	}
	if err := p.objs.NamesProg.Put(uint32(0), prog); err != nil {
		return fmt.Errorf("install the name check's program: %w", err)
	}
	return nil
}

// Detach detaches the programs: no attempt is recorded after it returns.
// The maps stay readable until Close.
func (p *Probe) Detach() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	return errors.Join(errs...)
}

// StopReaders makes ReadEvents and ReadDNS deliver every record still in
// the ring buffers, then return. Call it after Detach, so that no record
// arrives after the readers stop.
func (p *Probe) StopReaders() {
	p.stopping.Store(true)
	_ = p.events.Flush()
	_ = p.dns.Flush()
}

// Close detaches the programs and frees the maps. Later calls do nothing.
func (p *Probe) Close() error {
	p.closeOnce.Do(func() { p.closeErr = p.close() })
	return p.closeErr
}

func (p *Probe) close() error {
	errs := []error{p.Detach()}
	if p.events != nil {
		errs = append(errs, p.events.Close())
	}
	if p.dns != nil {
		errs = append(errs, p.dns.Close())
	}
	if p.slots != nil {
		errs = append(errs, p.slots.close())
	}
	if p.last != nil {
		errs = append(errs, p.last.close())
	}
	if p.active != nil {
		errs = append(errs, p.active.Close())
	}
	if p.spare != nil {
		errs = append(errs, p.spare.Close())
	}
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}

func addrOf(family uint8, raw [16]uint8) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(raw[:4]))
	}
	return netip.AddrFrom16(raw).Unmap()
}

// names interns process names: a drain turns every flow's comm and
// executable name into strings, and most flows share a few names.
type names map[string]string

// get returns the NUL-terminated name in c (a [16]int8 comm or a [64]int8
// executable name, as the kernel wrote it).
func (m names) get(c []int8) string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(c))), len(c))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if s, ok := m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(m) < 4096 {
		m[s] = s
	}
	return s
}

// ReadEvents delivers ring buffer records until the probe is closed, or
// until StopReaders and every pending record is delivered.
// Records of first attempts that are also counted in the flow map go to
// seen (they carry no hit of their own); records that are the only count
// of an attempt go to counted.
func (p *Probe) ReadEvents(seen, counted func(Attempt)) error {
	var clk cgroupbpf.MonoClock // the programs time attempts with bpf_ktime_get_coarse_ns
	interned := names{}
	r := cgroupbpf.Ring{Reader: p.events, Name: "event", Stopping: p.stopping.Load}
	if p.opts.WakeupBytes > 0 {
		r.Poll = p.opts.PollInterval
	}
	return r.Each(func(raw []byte) {
		if len(raw) < int(unsafe.Sizeof(bpf.EgressEvent{})) {
			return
		}
		e := (*bpf.EgressEvent)(unsafe.Pointer(&raw[0]))
		t := clk.Wall(e.TsNs)
		a := Attempt{
			CgroupID: e.CgroupId, UID: e.Uid, GID: e.Gid, TGID: e.Tgid, Comm: interned.get(e.Comm[:]), Exe: interned.get(e.Exe[:]),
			Proto: e.Proto, IP: addrOf(e.Family, e.Addr), Port: e.Port, Cookie: e.Cookie,
			Hits: 1, First: t, Last: t,
		}
		if e.Flags&eventCounted != 0 {
			counted(a)
		} else {
			seen(a)
		}
	})
}

// Kinds of dns ring records, as in bpf/egress.c.
const (
	dnsAnswer = 1
	dnsQuery  = 2
)

// ReadDNS reads the DNS queries and answers of the cgroup and delivers the
// answers that match a query (see DNSMatchStats), until the probe is
// closed, or until StopReaders and every pending record is read. A query
// is always read before its answer: the kernel writes it to the same ring
// buffer before the datagram leaves.
func (p *Probe) ReadDNS(fn func(DNSPacket)) error {
	var clk cgroupbpf.BootClock
	r := cgroupbpf.Ring{Reader: p.dns, Name: "dns", Stopping: p.stopping.Load}
	return r.Each(func(raw []byte) {
		if pkt, ok := p.matchDNS(raw, &clk); ok {
			fn(pkt)
		}
	})
}

// matchDNS remembers a query, or checks an answer against the queries and
// returns it when it matches one.
func (p *Probe) matchDNS(raw []byte, clk *cgroupbpf.BootClock) (DNSPacket, bool) {
	const head = int(unsafe.Sizeof(bpf.EgressDnsEvent{}))
	if len(raw) < head {
		return DNSPacket{}, false
	}
	e := (*bpf.EgressDnsEvent)(unsafe.Pointer(&raw[0]))
	payload := raw[head:min(len(raw), head+int(e.Len))]
	src := netip.AddrPortFrom(addrOf(e.Family, e.Saddr), e.Sport)
	dst := netip.AddrPortFrom(addrOf(e.Family, e.Daddr), e.Dport)
	q, qerr := dnsanswer.ParseQuestion(payload)
	now := time.Duration(e.TsNs)

	p.dnsMu.Lock()
	defer p.dnsMu.Unlock()
	t := p.queries
	switch {
	case e.Kind == dnsQuery:
		if qerr == nil && !q.Response {
			t.query(e.Cookie, e.Uid, q, dst, now)
		}
		return DNSPacket{}, false
	case e.Kind != dnsAnswer:
		return DNSPacket{}, false
	case qerr != nil || !q.Response:
		t.stats.Malformed++
		return DNSPacket{}, false
	case !t.answer(e.Cookie, q, src, now):
		return DNSPacket{}, false
	}
	return DNSPacket{
		Time: clk.Wall(e.TsNs), Cookie: e.Cookie, UID: e.Uid, Src: src, Dst: dst,
		Payload: append([]byte(nil), payload...), OrigLen: int(e.OrigLen),
	}, true
}

// Drain swaps in the empty flow map and passes every flow counted in the
// one swapped out to fn, emptying it. The kernel waits for the programs
// still running on the old map before the swap returns, so no count made
// before the swap is missed and none after it lands in the drained map.
// The per-CPU last-flow entries and the slots are swapped and read the
// same way: a repeat counted there is an Attempt of its own.
func (p *Probe) Drain(fn func(Attempt)) error {
	p.drainMu.Lock()
	defer p.drainMu.Unlock()
	if p.opts.PerEvent {
		return nil
	}
	var clk cgroupbpf.MonoClock // bpf_ktime_get_coarse_ns, as in ReadEvents
	counted := func(c *bpf.EgressCounting) { fn(p.countedAttempt(c, &clk)) }
	if p.slots != nil {
		if err := p.slots.drain(counted); err != nil {
			return err
		}
	}
	if p.last != nil {
		if err := p.last.drain(counted); err != nil {
			return err
		}
	}
	if err := p.objs.Flows.Put(uint32(0), p.spare); err != nil {
		return fmt.Errorf("swap flow map: %w", err)
	}
	drained := p.active
	p.active, p.spare = p.spare, drained

	var cursor ebpf.MapBatchCursor
	for {
		n, err := drained.BatchLookupAndDelete(&cursor, p.keys, p.vals, nil)
		for i := 0; i < n; i++ {
			k, v := &p.keys[i], &p.vals[i]
			fn(Attempt{
				CgroupID: k.CgroupId, UID: k.Uid, GID: v.Gid, TGID: v.Tgid, Comm: p.drainNames.get(k.Comm[:]), Exe: p.drainNames.get(v.Exe[:]),
				Proto: k.Proto, IP: addrOf(k.Family, k.Addr), Port: k.Port, Cookie: v.Cookie,
				Hits: v.Hits, First: clk.Wall(v.FirstNs), Last: clk.Wall(v.LastNs),
			})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("drain flow map: %w", err)
		}
	}
}

// countedAttempt is the counts of a slot or a last-flow entry (struct
// counting in bpf/egress.c) as an Attempt.
func (p *Probe) countedAttempt(c *bpf.EgressCounting, clk *cgroupbpf.MonoClock) Attempt {
	k := &c.Key
	return Attempt{
		CgroupID: k.CgroupId, UID: k.Uid, GID: c.Gid, TGID: c.Tgid, Comm: p.drainNames.get(k.Comm[:]), Exe: p.drainNames.get(c.Exe[:]),
		Proto: k.Proto, IP: addrOf(k.Family, k.Addr), Port: k.Port,
		Hits: c.Hits, First: clk.Wall(c.FirstNs), Last: clk.Wall(c.LastNs),
	}
}

// Stats sums the kernel's per-CPU counters.
func (p *Probe) Stats() (ProbeStats, error) {
	var out [statMax]uint64
	var per []uint64
	for i := range uint32(statMax) {
		if err := p.objs.Stats.Lookup(i, &per); err != nil {
			return ProbeStats{}, fmt.Errorf("read stats: %w", err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return ProbeStats{
		EventsLost:   out[statEventsLost],
		NotifyLost:   out[statNotifyLost],
		DNSLost:      out[statDNSLost],
		DNSErrors:    out[statDNSErrors],
		MapFull:      out[statMapFull],
		UDPUnsent:    out[statUDPUnsent],
		DNSQueryLost: out[statQueryLost],
		DNS:          p.dnsStats(),
	}, nil
}

func (p *Probe) dnsStats() DNSMatchStats {
	p.dnsMu.Lock()
	defer p.dnsMu.Unlock()
	return p.queries.stats
}
