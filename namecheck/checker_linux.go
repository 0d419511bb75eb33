//go:build linux

package namecheck

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// Dest is a name-checked destination: a user's (address, protocol,
// port) and the names it may present there.
type Dest struct {
	UID   uint32     `json:"uid"`
	IP    netip.Addr `json:"ip"`
	Proto uint8      `json:"proto"`
	Port  uint16     `json:"port"`
	Mode  Mode       `json:"mode"`
	Names []string   `json:"names"`
	// Followed makes this a rule template: every address the DNS
	// follower opens to UID on Proto and Port is checked against Names
	// (and the names learned there); IP is not used.
	Followed bool `json:"followed,omitempty"`
}

// Bounds of the kernel maps.
const (
	MaxDests = 65536
	MaxNames = 262144
)

// Config configures a Checker.
type Config struct {
	// Cgroup is the cgroup v2 directory whose sockets are checked.
	Cgroup string
	// NetnsCookie is the network namespace checked (0: every one).
	NetnsCookie uint64
	// Learn parses every TCP connection instead of the name-checked
	// ones, refuses nothing, and tells each name presented (verdict
	// "seen"): the learner's mode.
	Learn bool
	// NoAttach (only with Learn) loads the program without attaching
	// it: the caller runs it itself, from Program. The learner passes it
	// TCP segments by a tail call from its own egress program, so the
	// cgroup's egress hook runs one program, not two.
	NoAttach bool
	// PinDir, when set (a directory on a bpf file system), pins the
	// program's link and its destinations, names and socket states
	// there: a checker that dies leaves the check attached with its last
	// destinations, and the next one takes it over (see pin_linux.go).
	PinDir string
	// FollowPinDir, when set, is the DNS follower's pin directory: the
	// check shares the follower's view of the destinations it opens (a
	// map pinned there, created if the follower has not yet) and checks
	// them too (see Dest.Followed). Without it, followed addresses are
	// not name-checked.
	FollowPinDir string
	Log          *slog.Logger
}

// Checker is the attached name check.
type Checker struct {
	cfg   Config
	objs  bpf.NamecheckObjects
	link  link.Link
	rd    *ringbuf.Reader
	mu    sync.Mutex
	dests map[bpf.NamecheckNcDest]uint8
	names map[bpf.NamecheckNcNameKey]bool
	// followed is the follower's pinned map, when shared.
	followed *ebpf.Map
}

// Start loads the program and attaches it to the cgroup's egress; it
// checks nothing until Set gives it destinations.
func Start(cfg Config) (_ *Checker, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.NoAttach {
		if !cfg.Learn || cfg.PinDir != "" {
			return nil, errors.New("name check: only the learning mode, unpinned, runs without being attached")
		}
	} else if err := cgroupbpf.Check(cfg.Cgroup); err != nil {
		return nil, err
	}
	spec, err := bpf.LoadNamecheck()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[bpf.NamecheckVarNetnsCookie].Set(cfg.NetnsCookie); err != nil {
		return nil, fmt.Errorf("set the name check's namespace: %w", err)
	}
	if cfg.Learn {
		if err := spec.Variables[bpf.NamecheckVarLearnAll].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("set the name check's learning mode: %w", err)
		}
	}
	c := &Checker{cfg: cfg, dests: map[bpf.NamecheckNcDest]uint8{}, names: map[bpf.NamecheckNcNameKey]bool{}}
	if err := c.load(spec); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.rd, err = ringbuf.NewReader(c.objs.NcEvents); err != nil {
		return nil, fmt.Errorf("open the name check's events: %w", err)
	}
	if cfg.NoAttach {
		return c, nil
	}
	links, err := cgroupbpf.Attach(cfg.Cgroup, []cgroupbpf.Attachment{
		{Name: "name check", Type: ebpf.AttachCGroupInetEgress, Program: c.objs.NamecheckEgress}})
	if err != nil {
		return nil, err
	}
	c.link = links[0]
	if cfg.PinDir != "" {
		if err := c.pinLink(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Program is the name check's program, for a caller that runs it
// itself (Config.NoAttach): a cgroup_skb/egress program that returns the
// segment's verdict.
func (c *Checker) Program() *ebpf.Program { return c.objs.NamecheckEgress }

// Close detaches the program: sockets are no longer checked. A pinned
// check (Config.PinDir) stays attached: Detach removes it.
func (c *Checker) Close() error {
	var errs []error
	if c.link != nil {
		errs = append(errs, c.link.Close())
	}
	if c.rd != nil {
		errs = append(errs, c.rd.Close())
	}
	errs = append(errs, c.objs.Close())
	if c.followed != nil {
		errs = append(errs, c.followed.Close())
	}
	return errors.Join(errs...)
}

func destKey(d *Dest) (bpf.NamecheckNcDest, error) {
	k := bpf.NamecheckNcDest{Uid: d.UID, Port: d.Port, Proto: d.Proto}
	ip := d.IP.Unmap()
	switch {
	case d.Followed: // a rule template: family 0, no address
	case ip.Is4():
		k.Family = 4
		a := ip.As4()
		copy(k.Addr[:], a[:])
	case ip.Is6():
		k.Family = 6
		k.Addr = ip.As16()
	default:
		return k, fmt.Errorf("name-checked destination without an address (uid %d port %d)", d.UID, d.Port)
	}
	if d.Mode != Audit && d.Mode != Enforce {
		return k, fmt.Errorf("name-checked destination %s port %d: mode %s", ip, d.Port, d.Mode)
	}
	return k, nil
}

// Set makes dests the name-checked destinations, replacing those set
// before. Names come in before their destination, and a destination
// leaves before its names: a socket is never checked against a partial
// list.
func (c *Checker) Set(dests []Dest) error {
	want := map[bpf.NamecheckNcDest]uint8{}
	wantNames := map[bpf.NamecheckNcNameKey]bool{}
	for i := range dests {
		k, err := destKey(&dests[i])
		if err != nil {
			return err
		}
		want[k] = uint8(dests[i].Mode)
		for _, n := range dests[i].Names {
			wantNames[bpf.NamecheckNcNameKey{Dest: k, Hash: NameHash(n)}] = true
		}
	}
	if len(want) > MaxDests || len(wantNames) > MaxNames {
		return fmt.Errorf("name check: %d destinations and %d names, more than the kernel maps hold (%d, %d)", len(want), len(wantNames), MaxDests, MaxNames)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	one := uint8(1)
	for k := range wantNames {
		if !c.names[k] {
			if err := c.objs.NcNames.Put(&k, &one); err != nil {
				return fmt.Errorf("add a checked name: %w", err)
			}
			c.names[k] = true
		}
	}
	for k, m := range want {
		if old, ok := c.dests[k]; !ok || old != m {
			if err := c.objs.NcDests.Put(&k, &m); err != nil {
				return fmt.Errorf("add a name-checked destination: %w", err)
			}
			c.dests[k] = m
		}
	}
	for k := range c.dests {
		if _, ok := want[k]; !ok {
			if err := c.objs.NcDests.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove a name-checked destination: %w", err)
			}
			delete(c.dests, k)
		}
	}
	for k := range c.names {
		if !wantNames[k] {
			if err := c.objs.NcNames.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove a checked name: %w", err)
			}
			delete(c.names, k)
		}
	}
	return nil
}

// Event is a connection whose name was refused.
type Event struct {
	Cookie   uint64     `json:"cookie"`
	UID      uint32     `json:"uid"`
	IP       netip.Addr `json:"ip"`
	Proto    uint8      `json:"proto"`
	Port     uint16     `json:"port"`
	Verdict  string     `json:"verdict"` // mismatch or no_name; seen (Learn)
	Kind     string     `json:"kind"`    // tls, http or none: what the first data looked like
	Name     string     `json:"name,omitempty"`
	Enforced bool       `json:"enforced"` // dropped, not only logged
}

var kinds = [...]string{"none", "tls", "http"}

func decodeEvent(raw []byte) (Event, bool) {
	var e bpf.NamecheckNcEvent
	if len(raw) < int(unsafe.Sizeof(e)) {
		return Event{}, false
	}
	e = *(*bpf.NamecheckNcEvent)(unsafe.Pointer(&raw[0]))
	ev := Event{Cookie: e.Cookie, UID: e.Dest.Uid, Proto: e.Dest.Proto, Port: e.Dest.Port, Enforced: e.Enforced == 1}
	if e.Dest.Family == 4 {
		ev.IP = netip.AddrFrom4([4]byte(e.Dest.Addr[:4]))
	} else {
		ev.IP = netip.AddrFrom16(e.Dest.Addr)
	}
	switch e.Verdict {
	case 1:
		ev.Verdict = "mismatch"
	case 3:
		ev.Verdict = "seen"
	default:
		ev.Verdict = "no_name"
	}
	ev.Name = string(e.Name[:min(int(e.NameLen), len(e.Name))])
	ev.Kind = "none"
	if int(e.Kind) < len(kinds) {
		ev.Kind = kinds[e.Kind]
	}
	return ev, true
}

// Events calls fn with each refused connection until Close.
func (c *Checker) Events(fn func(Event)) error {
	return cgroupbpf.Ring{Reader: c.rd, Name: "name check"}.Each(func(raw []byte) {
		if ev, ok := decodeEvent(raw); ok {
			fn(ev)
		}
	})
}

// Stats are the kernel's counters.
type Stats struct {
	Checked  uint64 `json:"checked"`  // connections whose name was checked
	Passed   uint64 `json:"passed"`   // ... allowed
	Mismatch uint64 `json:"mismatch"` // ... presented a name not allowed
	NoName   uint64 `json:"no_name"`  // ... presented no name
	Dropped  uint64 `json:"dropped"`  // segments dropped
	Gathered uint64 `json:"gathered"` // segments held to gather a split first message
	Lost     uint64 `json:"lost"`     // events user space missed
	NoStore  uint64 `json:"no_store"` // sockets without storage
}

// Stats reads the counters.
func (c *Checker) Stats() (Stats, error) { return readStats(c.objs.NcStats) }

func readStats(m *ebpf.Map) (Stats, error) {
	var s Stats
	fields := []*uint64{&s.Checked, &s.Passed, &s.Mismatch, &s.NoName, &s.Dropped, &s.Gathered, &s.Lost, &s.NoStore}
	for i, f := range fields {
		var per []uint64
		if err := m.Lookup(uint32(i), &per); err != nil {
			return s, fmt.Errorf("read the name check's counters: %w", err)
		}
		for _, v := range per {
			*f += v
		}
	}
	return s, nil
}

func netipPort(e Event) string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// Destinations is how many name-checked destinations are set.
func (c *Checker) Destinations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.dests)
}

// RunStats are the program's run count and total run time since it was
// loaded, when the kernel's BPF statistics are on (ebpf.EnableStats);
// zero otherwise.
func (c *Checker) RunStats() (runs uint64, total time.Duration, err error) {
	st, err := c.objs.NamecheckEgress.Stats()
	if err != nil {
		return 0, 0, fmt.Errorf("read the name check's program stats: %w", err)
	}
	return st.RunCount, st.Runtime, nil
}
