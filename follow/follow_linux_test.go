//go:build linux

package follow

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// followLab: a server namespace with HTTP on port 8080 of many addresses
// (10.77.1.1-N) and a DNS server whose name rot.lab gives the next address
// at every query; a client namespace with the enforcing table; a child
// cgroup the follower watches; a store whose baseline has nobody reaching
// rot.lab (learned at 10.77.1.1) and uid 4242 reaching 10.77.0.1.
type followLab struct {
	pair   *lab.Pair
	cg     *lab.Cgroup
	st     *store.Store
	target nft.Target
	dns    *lab.DNSServer
	next   atomic.Uint32 // the next rot.lab address
	pool   int
	nobody lab.As
	other  lab.As
	f      *Follower
	sink   *udpSink
	pins   string // the follower's bpf file system
	// gateTimeout is the follower's GateTimeout (0: the default).
	gateTimeout time.Duration
	// stop stops the follower: cleanly, or as if it died (not graceful).
	stop func(graceful bool)
	// slow.rot.lab is answered once the test closes slowRelease.
	slowAsked, slowRelease chan struct{}

	mu    sync.Mutex
	added []Address
}

const followPool = 250

// followLabOpts shape a followLab.
type followLabOpts struct {
	floor      time.Duration
	maxPerName int
	// noFollower builds the table and starts no follower (startFollower
	// starts one later).
	noFollower bool
	// gateTimeout is the follower's GateTimeout (default).
	gateTimeout time.Duration
}

func newFollowLab(t *testing.T, floor time.Duration, maxPerName int) *followLab {
	return newFollowLabWith(t, followLabOpts{floor: floor, maxPerName: maxPerName})
}

// newFollowLabWith builds the lab. Besides rot.lab, the server has HTTP on
// 10.77.0.1:9090 (allowed to nobody), UDP sinks on ports 9000 and 9001
// (l.sink), and its DNS server answers own.lab. The baseline allows uid
// 4242 and nobody UDP 10.77.0.1:9001 (the sentinel of the attack tests);
// name rules give nobody udp.lab (rotating like rot.lab) on UDP 9000, and uid 4242 and root
// own.lab on TCP 8080.
func newFollowLabWith(t *testing.T, o followLabOpts) *followLab {
	t.Helper()
	lab.Require(t, "nft", "curl", "dig", "socat")
	l := &followLab{pair: lab.NewPair(t), cg: lab.NewCgroup(t), pool: followPool, gateTimeout: o.gateTimeout}
	l.addPool(t)
	lab.ServeHTTP(t, l.pair.Server, ":8080")
	lab.ServeHTTP(t, l.pair.Server, ":9090")
	l.sink = newUDPSink(t, l.pair.Server, 9000, 9001)
	l.next.Store(1)
	l.slowAsked, l.slowRelease = make(chan struct{}, 1), make(chan struct{})
	l.dns = lab.ServeDNS(t, l.pair.Server, lab.ServerIP4+":53", l.answer)
	l.applyTable(t, o)
	l.nobody = lab.As{UID: 65534, GID: 65534, Netns: l.pair.Client, Cgroup: l.cg}
	l.other = lab.As{UID: 4242, GID: 4242, Netns: l.pair.Client, Cgroup: l.cg}
	if !o.noFollower {
		l.startFollower(t)
	}
	return l
}

// addPool gives the server the pool of rot.lab's addresses, and the client
// permanent neighbours: no datagram waits for ARP, so two sent one after
// the other arrive in that order (the attack tests rely on it).
func (l *followLab) addPool(t *testing.T) {
	var batch strings.Builder
	for i := 1; i <= l.pool; i++ {
		fmt.Fprintf(&batch, "addr add 10.77.1.%d/32 dev veth0\n", i)
	}
	file := filepath.Join(t.TempDir(), "addrs")
	if err := os.WriteFile(file, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.MustRun(t, "ip", "-n", l.pair.Server.Name, "-batch", file)
	lab.MustRun(t, "ip", "-n", l.pair.Client.Name, "route", "add", "10.77.1.0/24", "dev", "veth1")
	mac := strings.TrimSpace(lab.MustRun(t, "ip", "netns", "exec", l.pair.Server.Name, "cat", "/sys/class/net/veth0/address"))
	batch.Reset()
	for i := 1; i <= l.pool; i++ {
		fmt.Fprintf(&batch, "neigh replace 10.77.1.%d lladdr %s dev veth1 nud permanent\n", i, mac)
	}
	fmt.Fprintf(&batch, "neigh replace %s lladdr %s dev veth1 nud permanent\n", lab.ServerIP4, mac)
	if err := os.WriteFile(file, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.MustRun(t, "ip", "-n", l.pair.Client.Name, "-batch", file)
}

// answer is the lab's DNS server: rot.lab and udp.lab rotate over the
// pool, the other names try what an attacker would.
func (l *followLab) answer(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	switch strings.ToLower(q.Name) {
	case "rot.lab.", "udp.lab.":
		if q.Qtype == dns.TypeA {
			n := (l.next.Add(1)-2)%uint32(l.pool) + 1
			m.Answer = append(m.Answer, lab.A(q.Name, fmt.Sprintf("10.77.1.%d", n), 1))
		}
	case "www.rot.lab.": // a CNAME chain to rot.lab's address
		if q.Qtype == dns.TypeA {
			n := (l.next.Add(1)-2)%uint32(l.pool) + 1
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "edge.cdn.lab."},
				lab.A("edge.cdn.lab", fmt.Sprintf("10.77.1.%d", n), 1))
		}
	case "owner.rot.lab.": // an address record of another owner
		m.Answer = append(m.Answer, lab.A("unrelated.lab", "10.77.1.235", 60))
	case "chain.rot.lab.": // a CNAME, then an address of another owner
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "a.cdn.lab."},
			lab.A("b.cdn.lab", "10.77.1.236", 60))
	case "ttl.rot.lab.": // a TTL of 30 days
		m.Answer = append(m.Answer, lab.A(q.Name, "10.77.1.237", 30*24*3600))
	case "slow.rot.lab.": // answered when the test says so
		l.slowAsked <- struct{}{}
		<-l.slowRelease
		m.Answer = append(m.Answer, lab.A(q.Name, "10.77.1.238", 60))
	case "flood.lab.": // never answered
		return
	case "own.lab.":
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, lab.A(q.Name, "10.77.1.9", 60))
		}
	case "wrongid.lab.":
		m.Id++
		m.Answer = append(m.Answer, lab.A(q.Name, "10.77.1.201", 60))
	case "swapped.lab.":
		m.Question[0].Name = "rot.lab."
		m.Answer = append(m.Answer, lab.A("rot.lab", "10.77.1.202", 60))
	}
	_ = w.WriteMsg(m)
}

// applyTable records the baseline and applies, as generation 1, a table
// with name rules for rot.lab's wildcard, udp.lab and own.lab.
func (l *followLab) applyTable(t *testing.T, o followLabOpts) {
	db := filepath.Join(t.TempDir(), "baseline.db")
	var err error
	if l.st, err = store.Create(db, store.Options{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	server := netip.MustParseAddr(lab.ServerIP4)
	err = l.st.Apply(&store.Batch{Flows: []store.Flow{
		{FlowKey: store.FlowKey{UID: 65534, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("10.77.1.1"), Port: 8080}, Hits: 2, FirstSeen: now, LastSeen: now, Hostnames: []string{"rot.lab"}},
		{FlowKey: store.FlowKey{UID: 4242, Proto: plan.ProtoTCP, IP: server, Port: 8080}, Hits: 2, FirstSeen: now, LastSeen: now},
		{FlowKey: store.FlowKey{UID: 4242, Proto: plan.ProtoUDP, IP: server, Port: 9001}, Hits: 2, FirstSeen: now, LastSeen: now},
		{FlowKey: store.FlowKey{UID: 65534, Proto: plan.ProtoUDP, IP: server, Port: 9001}, Hits: 2, FirstSeen: now, LastSeen: now},
	}})
	if err != nil {
		t.Fatal(err)
	}
	l.target = nft.Target{Netns: l.pair.Client.Name}
	flows, _ := l.st.Flows()
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, DNSServers: []netip.Addr{server},
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth, TTLFloor: o.floor, MaxPerName: o.maxPerName,
			Names: []plan.NameRule{{UID: 65534, Name: "*.rot.lab", Proto: plan.ProtoTCP, Port: 8080},
				{UID: 65534, Name: "udp.lab", Proto: plan.ProtoUDP, Port: 9000},
				{UID: 4242, Name: "own.lab", Proto: plan.ProtoTCP, Port: 8080},
				{UID: 0, Name: "own.lab", Proto: plan.ProtoTCP, Port: 8080}}}})
	if _, _, err := rollout.Apply(nft.Open(l.target), p, rollout.Options{Store: l.st}); err != nil {
		t.Fatal(err)
	}
}

// startFollower starts the follower on the lab's cgroup; l.stop or
// t.Cleanup stops it.
func (l *followLab) startFollower(t *testing.T) {
	t.Helper()
	ready := make(chan struct{})
	var err error
	if l.pins == "" {
		l.pins = lab.NewBPFFS(t)
	}
	l.f, err = Start(Config{Cgroup: l.cg.Path, Target: l.target, Table: plan.DefaultTable, Store: l.st,
		Resolvers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, Window: 30 * time.Second, Ready: ready, PinRoot: l.pins,
		GateTimeout: l.gateTimeout,
		OnElement:   func(e Address) { l.mu.Lock(); l.added = append(l.added, e); l.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.f.Run(ctx) }()
	<-ready
	var once sync.Once
	f := l.f
	l.stop = func(graceful bool) {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("follower: %v", err)
			}
			if !graceful {
				_ = f.closeKernel(false) // as if the process died
			} else if err := f.Close(); err != nil {
				t.Errorf("stop the follower: %v", err)
			}
		})
	}
	stop := l.stop
	t.Cleanup(func() { stop(true) })
}

// curl fetches url as a and says whether it went through. Flows that
// should pass get a generous time limit (a slow machine must not make them
// look blocked); flows that should be dropped use blockedCurl.
func (l *followLab) curl(a lab.As, url string) error {
	_, err := a.Run("curl", "-sS", "--max-time", "30", url)
	return err
}

// blockedCurl is curl for flows that should be dropped: a dropped SYN
// never completes, so 2 s only bounds the wait.
func (l *followLab) blockedCurl(a lab.As, url string) error {
	_, err := a.Run("curl", "-sS", "--max-time", "2", url)
	return err
}

func (l *followLab) drops(t *testing.T) uint64 {
	t.Helper()
	st, err := nft.Open(l.target).Status(plan.DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	return st.Dropped.Packets
}

func (l *followLab) setElements(t *testing.T) map[string]bool {
	t.Helper()
	st, err := nft.Open(l.target).Status(plan.DefaultTable, true)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range st.Installed().Elements[plan.SetFollow4] {
		out[e.Key()] = true
	}
	return out
}

// TestFollowNameAcrossAddressChanges: nobody learned rot.lab at one
// address; in enforce mode it still reaches the name at every new address;
// uid 4242, or a connect without a lookup, does not; a followed address
// expires after its TTL floor.
func TestFollowNameAcrossAddressChanges(t *testing.T) {
	l := newFollowLab(t, 3*time.Second, 2*followPool)
	for i := 0; i < 3; i++ {
		if err := l.curl(l.nobody, "http://rot.lab:8080/"); err != nil {
			t.Fatalf("nobody could not reach rot.lab at its new address (round %d): %v", i, err)
		}
	}
	if err := l.curl(l.nobody, "http://www.rot.lab:8080/"); err != nil {
		t.Errorf("a wildcard name through a CNAME chain: %v", err)
	}
	// The follower put the addresses in the set, with their timeout.
	lab.WaitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.added) >= 4 })
	l.mu.Lock()
	last := l.added[len(l.added)-1]
	l.mu.Unlock()
	if last.UID != 65534 || last.Port != 8080 || last.Timeout != 3*time.Second {
		t.Errorf("followed element %+v", last)
	}
	key := fmt.Sprintf("65534 . %s . tcp . 8080", last.IP)
	if !l.setElements(t)[key] {
		t.Errorf("%s is not in set follow4: %v", key, l.setElements(t))
	}
	direct := fmt.Sprintf("http://%s:8080/", last.IP)
	if err := l.curl(l.nobody, direct); err != nil {
		t.Errorf("the followed address before its expiry: %v", err)
	}

	before := l.drops(t)
	if err := l.blockedCurl(l.other, "http://rot.lab:8080/"); err == nil {
		t.Error("uid 4242 reached rot.lab: it has no name rule")
	}
	if err := l.blockedCurl(l.nobody, "http://10.77.1.240:8080/"); err == nil {
		t.Error("nobody reached an address no answer gave")
	}
	if l.drops(t) == before {
		t.Error("nothing was dropped")
	}
	// Without a new lookup, the address expires with its TTL floor (3 s):
	// the element leaves the set (within WaitFor's deadline).
	lab.WaitFor(t, func() bool { return !l.setElements(t)[key] })
	if err := l.blockedCurl(l.nobody, direct); err == nil {
		t.Error("the followed address still works after it expired, without a lookup")
	}
	s := l.f.Stats()
	if s.Accepted < 4 || s.Added < 4 || s.NoRule == 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestFollowFirstConnect: 200 times, resolve a name whose address changes
// at every answer and connect at once: no first SYN is dropped.
func TestFollowFirstConnect(t *testing.T) {
	if os.Getenv("EGRESS_HELPER") == "resolve-connect" {
		resolveConnectHelper()
		return
	}
	l := newFollowLab(t, time.Minute, 2*followPool)
	before := l.drops(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := l.nobody.Command(ctx, "env", "EGRESS_HELPER=resolve-connect", "EGRESS_N=200", publicCopy(t, os.Args[0]), "-test.run=^TestFollowFirstConnect$")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var res struct {
		Done, Slow, Failed int
		Errors             []string
		DialP50, DialP99   time.Duration
	}
	if err := json.Unmarshal(jsonLine(out), &res); err != nil {
		t.Fatalf("helper said %q: %v", out, err)
	}
	drops := l.drops(t) - before
	s := l.f.Stats()
	var markRules uint64
	if s.MarkRules != nil {
		markRules = s.MarkRules.Packets
	}
	t.Logf("%d resolve-and-connect: %d first-SYN drops (kernel counter), %d slow connects, %d failed; dial p50 %v p99 %v; answer-to-element p50 %.0f us p99 %.0f us; %d connects marked, %d packets accepted by the mark rules (kernel counter)",
		res.Done, drops, res.Slow, res.Failed, res.DialP50, res.DialP99, s.LatencyP50, s.LatencyP99, s.Marked, markRules)
	if res.Done != 200 || res.Failed != 0 || res.Slow != 0 || drops != 0 {
		t.Errorf("first connects dropped: %+v, drop counter +%d", res, drops)
	}
	// The clients are done: what the follower says the mark rules let
	// through is their kernel counter, as nft lists it.
	if k := l.markRulesAccepted(t); s.MarkRules == nil || markRules != k {
		t.Errorf("the follower says the mark rules accepted %d packets (%v), nft says %d", markRules, s.MarkRules, k)
	}
	if s.Added < 190 {
		t.Errorf("only %d addresses added", s.Added)
	}
}

// publicCopy copies the test binary where another user can run it (go
// test builds it in a folder only root may enter).
func publicCopy(t *testing.T, bin string) string { return lab.PublicCopy(t, bin, "helper") }

// jsonLine is the helper's result among the test binary's output.
func jsonLine(b []byte) []byte {
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "{") {
			return []byte(l)
		}
	}
	return b
}

// resolveConnectHelper runs in the client namespace as nobody: it asks for
// rot.lab and connects to the answer's address at once, EGRESS_N times. A
// connect slower than 500 ms means the first SYN was dropped (TCP resends
// it after a second).
func resolveConnectHelper() {
	n, _ := strconv.Atoi(os.Getenv("EGRESS_N"))
	c := new(dns.Client)
	var res struct {
		Done, Slow, Failed int
		Errors             []string
		DialP50, DialP99   time.Duration
	}
	var dials []time.Duration
	for i := 0; i < n; i++ {
		m := new(dns.Msg)
		m.SetQuestion("rot.lab.", dns.TypeA)
		r, _, err := c.Exchange(m, lab.ServerIP4+":53")
		if err != nil || len(r.Answer) == 0 {
			res.Failed++
			res.Errors = append(res.Errors, fmt.Sprint("resolve: ", err))
			continue
		}
		ip := r.Answer[0].(*dns.A).A.String()
		start := time.Now()
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), 3*time.Second)
		d := time.Since(start)
		dials = append(dials, d)
		res.Done++
		if err != nil {
			res.Failed++
			res.Errors = append(res.Errors, err.Error())
			continue
		}
		conn.Close()
		if d > 500*time.Millisecond {
			res.Slow++
			if res.Slow == 5 {
				break // the mechanism is broken: no need to wait for all
			}
		}
	}
	sort.Slice(dials, func(i, j int) bool { return dials[i] < dials[j] })
	if len(dials) > 0 {
		res.DialP50, res.DialP99 = dials[len(dials)/2], dials[len(dials)*99/100]
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

// TestForgedAnswersOpenNothing: answers from a non-resolver, with a wrong
// query id, with another question, or to a socket that sent no query open
// no destination, and each is counted.
func TestForgedAnswersOpenNothing(t *testing.T) {
	l := newFollowLab(t, time.Minute, 2*followPool)
	lab.MustRun(t, "ip", "-n", l.pair.Server.Name, "addr", "add", "10.77.0.9/24", "dev", "veth0")
	rogue := lab.ServeDNS(t, l.pair.Server, "10.77.0.9:53", func(w dns.ResponseWriter, r *dns.Msg) {})
	s0 := l.f.Stats()

	// 2. A wrong query id (dig ignores it, the kernel sees it).
	_, _ = l.nobody.Run("dig", "+tries=1", "+time=1", "@"+lab.ServerIP4, "wrongid.lab")
	// 3. Another question than the query's.
	_, _ = l.nobody.Run("dig", "+tries=1", "+time=1", "@"+lab.ServerIP4, "swapped.lab")
	// 4. An answer from the resolver's port 53 to a socket that sent no
	// query.
	ctx, cancel := context.WithCancel(context.Background())
	listener := l.nobody.Command(ctx, "socat", "-u", "UDP4-RECV:5353", "-")
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = listener.Wait() })
	lab.WaitFor(t, func() bool {
		out, _ := exec.Command("ip", "netns", "exec", l.pair.Client.Name, "ss", "-Hlun", "sport", "= :5353").Output()
		return len(strings.TrimSpace(string(out))) > 0
	})
	forged := new(dns.Msg)
	forged.SetQuestion("rot.lab.", dns.TypeA)
	forged.Response = true
	forged.Answer = append(forged.Answer, lab.A("rot.lab", "10.77.1.204", 60))
	wire, err := forged.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.dns.Conn.WriteTo(wire, &net.UDPAddr{IP: net.ParseIP(lab.ClientIP4), Port: 5353}); err != nil {
		t.Fatal(err)
	}
	// 1. From port 53 of an address that is not a configured resolver.
	forged.Answer[0] = lab.A("rot.lab", "10.77.1.203", 60)
	if wire, err = forged.Pack(); err != nil {
		t.Fatal(err)
	}
	if _, err := rogue.Conn.WriteTo(wire, &net.UDPAddr{IP: net.ParseIP(lab.ClientIP4), Port: 5353}); err != nil {
		t.Fatal(err)
	}
	// The kernel counts each answer as it sees it.
	lab.WaitFor(t, func() bool {
		s := l.f.Stats()
		return s.NotResolver > s0.NotResolver && s.NoQuery >= s0.NoQuery+2 && s.Mismatch > s0.Mismatch
	})

	s := l.f.Stats()
	if d := s.NotResolver - s0.NotResolver; d == 0 {
		t.Error("the answer from a non-resolver was not counted")
	}
	if d := s.NoQuery - s0.NoQuery; d < 2 {
		t.Errorf("answers with no matching query counted %d times, want at least 2 (wrong id, no query)", d)
	}
	if d := s.Mismatch - s0.Mismatch; d == 0 {
		t.Error("the answer with another question was not counted")
	}
	if s.Accepted != s0.Accepted || s.Added != s0.Added {
		t.Errorf("a forged answer was used: %+v -> %+v", s0, s)
	}
	for _, ip := range []string{"10.77.1.201", "10.77.1.202", "10.77.1.203", "10.77.1.204"} {
		if err := l.blockedCurl(l.nobody, "http://"+ip+":8080/"); err == nil {
			t.Errorf("a forged answer opened %s", ip)
		}
	}
	if elems := l.setElements(t); len(elems) != 0 {
		t.Errorf("forged answers put elements in the set: %v", elems)
	}
	if err := l.st.PutMeta("probe", nil); err != nil { // the store is writable for the follower's counters
		t.Fatal(err)
	}
	l.f.saveStats()
	saved, err := ReadStats(l.st, l.target, plan.DefaultTable)
	if err != nil || saved == nil || saved.Ignored() < 4 {
		t.Errorf("counters saved for status: %+v, %v", saved, err)
	}
}

// TestFollowBoundPerName: a name whose answers keep giving new addresses
// holds at most max_per_name of them in the set; the rest are counted.
func TestFollowBoundPerName(t *testing.T) {
	l := newFollowLab(t, time.Minute, 2)
	for i := 0; i < 5; i++ {
		_ = l.curl(l.nobody, "http://rot.lab:8080/")
	}
	lab.WaitFor(t, func() bool { return l.f.Stats().BoundDropped >= 3 })
	if n := len(l.setElements(t)); n != 2 {
		t.Errorf("set follow4 holds %d addresses of rot.lab, want the bound, 2", n)
	}
	if s := l.f.Stats(); s.Added != 2 || s.BoundDropped != 3 {
		t.Errorf("stats %+v", s)
	}
}
