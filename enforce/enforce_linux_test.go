//go:build linux

package enforce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// enforceLab is a server namespace with HTTP on 8080 and 8081, a UDP
// counter on 9999 and dnsmasq serving web.lab, and a client namespace
// where the tables go.
type enforceLab struct {
	pair   *lab.Pair
	target Target
	udp    *udpCounter
	nobody lab.As // uid 65534
	other  lab.As // uid 4242
}

// udpCounter counts datagrams received per source UID... per payload tag.
type udpCounter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (u *udpCounter) count(tag string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[tag]
}

func newEnforceLab(t *testing.T) *enforceLab {
	t.Helper()
	lab.Require(t, "nft", "curl", "dig", "socat", "dnsmasq")
	pair := lab.NewPair(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "web.lab", IPs: []string{lab.ServerIP4, lab.ServerIP6}})
	u := &udpCounter{seen: map[string]int{}}
	var pc net.PacketConn
	if err := lab.InNetns(pair.Server, func() (err error) { pc, err = net.ListenPacket("udp", ":9999"); return err }); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.seen[strings.TrimSpace(string(buf[:n]))]++
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return &enforceLab{
		pair:   pair,
		target: Target{Netns: pair.Client.Name},
		udp:    u,
		nobody: lab.As{UID: 65534, GID: 65534, Netns: pair.Client},
		other:  lab.As{UID: 4242, GID: 4242, Netns: pair.Client},
	}
}

// baseline is what a learner would have recorded: nobody reaches web.lab
// over IPv4 and IPv6 on 8080, uid 4242 sends UDP to 9999, root connects
// to 8080 (the load test uses it).
func labBaseline() []store.Flow {
	return []store.Flow{
		flow(65534, ProtoTCP, lab.ServerIP4, 8080, 4, "web.lab"),
		flow(65534, ProtoTCP, lab.ServerIP6, 8080, 2, "web.lab"),
		flow(4242, ProtoUDP, lab.ServerIP4, 9999, 9),
		flow(0, ProtoTCP, lab.ServerIP4, 8080, 1),
	}
}

func labOptions(mode Mode) Options {
	return Options{Mode: mode, DNSServers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, NFLOGGroup: 77}
}

func (l *enforceLab) apply(t *testing.T, mode Mode) *Plan {
	t.Helper()
	p := Build(labBaseline(), labOptions(mode))
	if _, err := Apply(p, l.target); err != nil {
		t.Fatal(err)
	}
	return p
}

// curl fetches url as a; the time limit is generous (an allowed flow
// answers at once), so a slow machine cannot fail it.
func curl(a lab.As, url string, extra ...string) error {
	_, err := a.Run(append([]string{"curl", "-sS", "--max-time", "30", url}, extra...)...)
	return err
}

// blockedTCP runs curl to url as a, a flow the table should drop, until the
// default drop counter shows the drop: the SYN and the SYN sent again,
// which only happens when no answer came (the server answers an accepted
// SYN at once). curl has no time limit: it runs until the drop is seen.
// See lab.As.Blocked.
func (l *enforceLab) blockedTCP(t *testing.T, a lab.As, url string, extra ...string) error {
	t.Helper()
	return l.blocked(t, a, 2, append([]string{"curl", "-sS", url}, extra...)...)
}

// blockedUDP sends a datagram tagged tag as a, a flow the table should
// drop. The drop happens in the sender's own sendto, which fails with
// EPERM, after the default counter took the datagram.
func (l *enforceLab) blockedUDP(t *testing.T, a lab.As, tag string) error {
	t.Helper()
	before := l.defaultPackets(t)
	out, err := a.Run(udpArgs(tag)...)
	switch after := l.defaultPackets(t); {
	case err == nil:
		return fmt.Errorf("datagram %s got through", tag)
	case !strings.Contains(out, "Operation not permitted"):
		return fmt.Errorf("datagram %s: the sender failed, but not from a drop: %v", tag, err)
	case after != before+1:
		return fmt.Errorf("datagram %s: the default counter went from %d to %d, want one more", tag, before, after)
	}
	return nil
}

func (l *enforceLab) blocked(t *testing.T, a lab.As, packets uint64, args ...string) error {
	t.Helper()
	before := l.defaultPackets(t)
	return a.Blocked(func() bool { return l.defaultPackets(t) >= before+packets }, args...)
}

// sendUDP sends one datagram tagged tag to the UDP counter. A dropped
// send fails with EPERM, so the exit status is not checked: the counter
// tells what arrived.
func (l *enforceLab) sendUDP(a lab.As, tag string) {
	_, _ = a.Run(udpArgs(tag)...)
}

func udpArgs(tag string) []string {
	return []string{"bash", "-c", "echo " + tag + " | socat -u - UDP4-SENDTO:" + lab.ServerIP4 + ":9999"}
}

func (l *enforceLab) defaultPackets(t *testing.T) uint64 {
	t.Helper()
	st, err := ReadStatus(l.target, DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Default == nil {
		t.Fatal("no default counter")
	}
	return st.Default.Packets
}

// nflogEntries is what the default rule logged, as it arrives.
type nflogEntries struct {
	mu  sync.Mutex
	got []LogEntry
}

func (n *nflogEntries) all() []LogEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]LogEntry(nil), n.got...)
}

// String lists the entries readably (a test failure prints it).
func (n *nflogEntries) String() string {
	var b strings.Builder
	for _, e := range n.all() {
		uid := "-"
		if e.UID != nil {
			uid = strconv.FormatUint(uint64(*e.UID), 10)
		}
		fmt.Fprintf(&b, "\n  %s uid %s proto %d %s", e.Action, uid, e.Proto, netip.AddrPortFrom(e.Dst, e.Port))
	}
	return b.String()
}

func (n *nflogEntries) has(action string, uid uint32, dst string, port uint16) bool {
	return hasLog(n.all(), action, uid, dst, port)
}

// listenLog collects what the default rule logs in the client namespace,
// from the moment the subscription is in place.
func (l *enforceLab) listenLog(t *testing.T) *nflogEntries {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &nflogEntries{}
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- ListenLog(ctx, l.target, 77, ready, func(e LogEntry) { n.mu.Lock(); n.got = append(n.got, e); n.mu.Unlock() })
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("listen nflog: %v", err)
	}
	t.Cleanup(cancel)
	return n
}

// countedIsLogged waits until the default rule's counter equals the number
// of entries it logged (each packet it takes is counted and logged once),
// and returns that number. Call it once the clients are done.
func (l *enforceLab) countedIsLogged(t *testing.T, logs *nflogEntries) uint64 {
	t.Helper()
	var counted uint64
	var logged int
	if !lab.Eventually(func() bool {
		counted, logged = l.defaultPackets(t), len(logs.all())
		return counted == uint64(logged)
	}) {
		t.Errorf("the default rule counted %d packets and logged %d:%s", counted, logged, logs)
	}
	return counted
}

type logWant struct {
	uid  uint32
	dst  string
	port uint16
}

// awaitLogged waits until logs hold an entry of action for each of wants,
// and reports those missing after lab.Patience.
func awaitLogged(t *testing.T, logs *nflogEntries, action string, wants ...logWant) {
	t.Helper()
	lab.Eventually(func() bool {
		for _, w := range wants {
			if !logs.has(action, w.uid, w.dst, w.port) {
				return false
			}
		}
		return true
	})
	for _, w := range wants {
		if !logs.has(action, w.uid, w.dst, w.port) {
			t.Errorf("no NFLOG %s entry for uid %d to %s port %d; got:%s", action, w.uid, w.dst, w.port, logs)
		}
	}
}

func hasLog(entries []LogEntry, action string, uid uint32, dst string, port uint16) bool {
	for _, e := range entries {
		if e.Action == action && e.UID != nil && *e.UID == uid && e.Dst == netip.MustParseAddr(dst) && e.Port == port {
			return true
		}
	}
	return false
}

// TestEnforcePerUser: learned flows pass, the same destination for
// another user is dropped, an unseen destination is dropped, counted and
// logged, DNS keeps working; over IPv4 and IPv6.
func TestEnforcePerUser(t *testing.T) {
	l := newEnforceLab(t)
	logs := l.listenLog(t)
	l.apply(t, ModeEnforce)

	// DNS keeps working, for any user.
	for _, a := range []lab.As{l.nobody, l.other} {
		if out := a.MustRun(t, "dig", "+short", "+time=10", "web.lab"); !strings.Contains(out, lab.ServerIP4) {
			t.Errorf("uid %d: dig web.lab = %q", a.UID, out)
		}
	}
	// Learned flows pass, through names resolved by dnsmasq.
	if err := curl(l.nobody, "http://web.lab:8080/", "-4"); err != nil {
		t.Errorf("learned ipv4 flow dropped: %v", err)
	}
	if err := curl(l.nobody, "http://web.lab:8080/", "-6"); err != nil {
		t.Errorf("learned ipv6 flow dropped: %v", err)
	}
	// A datagram nobody never sent before is dropped; uid 4242's learned
	// one, sent after it, arrives (and shows that nothing sent before it
	// is still on its way).
	if err := l.blockedUDP(t, l.nobody, "nobody-unlearned"); err != nil {
		t.Errorf("unlearned udp flow: %v", err)
	}
	l.sendUDP(l.other, "other-learned")

	// The same destinations for another user are dropped.
	if err := l.blockedTCP(t, l.other, "http://web.lab:8080/", "-4"); err != nil {
		t.Errorf("uid 4242 to nobody's ipv4 destination: %v", err)
	}
	if err := l.blockedTCP(t, l.other, "http://web.lab:8080/", "-6"); err != nil {
		t.Errorf("uid 4242 to nobody's ipv6 destination: %v", err)
	}
	// An unseen destination is dropped.
	if err := l.blockedTCP(t, l.nobody, "http://10.77.0.1:8081/"); err != nil {
		t.Errorf("nobody to an unseen destination: %v", err)
	}
	if err := l.blockedTCP(t, l.nobody, "http://[fd77::1]:8081/"); err != nil {
		t.Errorf("nobody to an unseen ipv6 destination: %v", err)
	}
	if !lab.Eventually(func() bool { return l.udp.count("other-learned") == 1 }) {
		t.Errorf("learned udp flow: %d datagrams arrived, want 1", l.udp.count("other-learned"))
	}
	if n := l.udp.count("nobody-unlearned"); n != 0 {
		t.Errorf("unlearned udp flow: %d datagrams arrived, want 0", n)
	}
	// Each drop is logged with its user and destination, and counted.
	awaitLogged(t, logs, "drop", logWant{4242, lab.ServerIP4, 8080}, logWant{4242, lab.ServerIP6, 8080},
		logWant{65534, lab.ServerIP4, 8081}, logWant{65534, lab.ServerIP6, 8081}, logWant{65534, lab.ServerIP4, 9999})
	l.countedIsLogged(t, logs)
	for _, e := range logs.all() {
		if e.Action != "drop" {
			t.Errorf("enforce mode logged %s; all:%s", e.Action, logs)
		}
	}
}

// TestAuditBlocksNothing: in audit mode the same traffic passes, and the
// default rule counts and logs it.
func TestAuditBlocksNothing(t *testing.T) {
	l := newEnforceLab(t)
	logs := l.listenLog(t)
	l.apply(t, ModeAudit)
	if err := curl(l.other, "http://10.77.0.1:8080/"); err != nil {
		t.Errorf("audit mode blocked uid 4242: %v", err)
	}
	if err := curl(l.nobody, "http://[fd77::1]:8081/"); err != nil {
		t.Errorf("audit mode blocked an unseen ipv6 destination: %v", err)
	}
	l.sendUDP(l.nobody, "audit-udp")
	if !lab.Eventually(func() bool { return l.udp.count("audit-udp") == 1 }) {
		t.Errorf("audit mode: %d datagrams arrived, want 1", l.udp.count("audit-udp"))
	}
	awaitLogged(t, logs, "audit", logWant{4242, lab.ServerIP4, 8080}, logWant{65534, lab.ServerIP6, 8081},
		logWant{65534, lab.ServerIP4, 9999})
	l.countedIsLogged(t, logs)
	for _, e := range logs.all() {
		if e.Action != "audit" {
			t.Errorf("audit mode logged %s; all:%s", e.Action, logs)
		}
	}
}

// TestRejectedBatchKeepsTheOldTable: a batch the kernel refuses leaves the
// previous table in place and working.
func TestRejectedBatchKeepsTheOldTable(t *testing.T) {
	l := newEnforceLab(t)
	l.apply(t, ModeEnforce)
	bad := Build(append(labBaseline(), flow(65534, ProtoTCP, lab.ServerIP4, 8081, 1)), labOptions(ModeAudit))
	// Inject a fault: an element whose key the kernel cannot take.
	bad.Sets[0].Elements = append(bad.Sets[0].Elements, Element{UID: 1, Proto: ProtoTCP, Port: 1})
	_, err := Apply(bad, l.target)
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("apply of a bad batch: err = %v, want ErrRejected", err)
	}
	st, err := ReadStatus(l.target, DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != ModeEnforce || st.Sets[0].Elements != 3 {
		t.Errorf("after a rejected batch: %+v", st)
	}
	if err := curl(l.nobody, "http://10.77.0.1:8080/"); err != nil {
		t.Errorf("the old table stopped allowing a learned flow: %v", err)
	}
	if err := l.blockedTCP(t, l.nobody, "http://10.77.0.1:8081/"); err != nil {
		t.Errorf("the rejected table's new element: %v", err)
	}
}

// TestReplaceUnderLoad: 40 replaces while a client connects in a loop: no
// allowed connection fails, and no packet of it is dropped even for a
// moment (a dropped SYN is sent again and may still connect, so the log is
// what shows it). Each replace waits for one more finished connection, so
// the replaces are spread over the load whatever the speed of either side.
func TestReplaceUnderLoad(t *testing.T) {
	const replaces = 40
	l := newEnforceLab(t)
	logs := l.listenLog(t)
	plans := []*Plan{l.apply(t, ModeEnforce), Build(labBaseline(), labOptions(ModeEnforce))}
	plans[1].Sets[0].Elements = append(plans[1].Sets[0].Elements, Element{UID: 1, IP: netip.MustParseAddr("192.0.2.1"), Proto: ProtoTCP, Port: 1})

	var attempts, ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(stopLoad)
	done := make(chan error, 1)
	go func() {
		done <- lab.InNetns(l.pair.Client, func() error {
			d := net.Dialer{Timeout: lab.Patience}
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				attempts.Add(1)
				c, err := d.Dial("tcp", lab.ServerIP4+":8080") // as root (uid 0): a learned flow
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				c.Close()
				ok.Add(1)
			}
		})
	}()
	finished := func() int64 { return ok.Load() + failed.Load() }
	oneMore := func(what string) {
		n := finished()
		lab.Await(t, "a connection to finish "+what, func() bool { return finished() > n })
	}
	for i := 0; i < replaces; i++ {
		oneMore("before a replace")
		if _, err := Apply(plans[i%2], l.target); err != nil {
			t.Fatal(err)
		}
	}
	oneMore("after the last replace")
	stopLoad()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connections during %d replaces, %d failed", attempts.Load(), replaces, failed.Load())
	if failed.Load() != 0 || ok.Load() != attempts.Load() {
		t.Errorf("%d of %d allowed connections failed during replaces (first: %v)", failed.Load(), attempts.Load(), firstErr.Load())
	}
	if st, err := ReadStatus(l.target, DefaultTable, false); err != nil || st.Sets[0].Elements != len(plans[(replaces-1)%2].Sets[0].Elements) {
		t.Errorf("after the replaces the table is not the last plan: %+v, %v", st, err)
	}
	// A drop after the load: once its entry is in, every earlier entry is.
	if err := l.blockedUDP(t, l.nobody, "barrier"); err != nil {
		t.Fatal(err)
	}
	awaitLogged(t, logs, "drop", logWant{65534, lab.ServerIP4, 9999})
	if n := len(logs.all()); n != 1 {
		t.Errorf("%d packets dropped during the replaces; logged:%s", n-1, logs)
	}
}

// TestRemoveLeavesNoTrace: remove deletes our table and nothing else; a
// second remove is a no-op.
func TestRemoveLeavesNoTrace(t *testing.T) {
	l := newEnforceLab(t)
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "add table inet other; add chain inet other c")
	l.apply(t, ModeEnforce)
	removed, err := Remove(l.target, DefaultTable)
	if err != nil || !removed {
		t.Fatalf("remove = %v, %v", removed, err)
	}
	out := lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "list", "ruleset")
	if strings.Contains(out, "egress") {
		t.Errorf("after remove the ruleset still mentions egress:\n%s", out)
	}
	if !strings.Contains(out, "table inet other") {
		t.Errorf("remove touched another table:\n%s", out)
	}
	removed, err = Remove(l.target, DefaultTable)
	if err != nil || removed {
		t.Errorf("second remove = %v, %v; want a no-op", removed, err)
	}
	if err := curl(l.other, "http://10.77.0.1:8080/"); err != nil {
		t.Errorf("traffic blocked after remove: %v", err)
	}
}

// TestDiffAgainstKernel: diff names the elements and rules apply would
// add and remove, and the mode change.
func TestDiffAgainstKernel(t *testing.T) {
	l := newEnforceLab(t)
	p0 := Build(labBaseline(), labOptions(ModeAudit))
	d, err := DiffKernel(p0, l.target)
	if err != nil {
		t.Fatal(err)
	}
	if d.Present || len(d.Added) != 4 {
		t.Errorf("diff against nothing: %+v", d)
	}
	if _, err := Apply(p0, l.target); err != nil {
		t.Fatal(err)
	}
	flows := append(labBaseline()[1:], flow(65534, ProtoTCP, lab.ServerIP4, 8081, 1))
	p1 := Build(flows, labOptions(ModeEnforce))
	d, err = DiffKernel(p1, l.target)
	if err != nil {
		t.Fatal(err)
	}
	if d.ModeFrom != ModeAudit || d.ModeTo != ModeEnforce {
		t.Errorf("mode change %s -> %s", d.ModeFrom, d.ModeTo)
	}
	if len(d.Added) != 1 || d.Added[0].Key() != "65534 . 10.77.0.1 . tcp . 8081" {
		t.Errorf("added %+v", d.Added)
	}
	if len(d.Removed) != 1 || d.Removed[0].Key() != "65534 . 10.77.0.1 . tcp . 8080" {
		t.Errorf("removed %+v", d.Removed)
	}
	// The default enforce rules: the rate-limited log and the drop.
	if len(d.RulesAdded) != 2 || len(d.RulesRemoved) != 1 || !strings.Contains(d.RulesAdded[0], "enforce") {
		t.Errorf("rules +%v -%v", d.RulesAdded, d.RulesRemoved)
	}
	if _, err := Apply(p1, l.target); err != nil {
		t.Fatal(err)
	}
	d, err = DiffKernel(p1, l.target)
	if err != nil || !d.Empty() {
		t.Errorf("diff after apply: %+v, %v", d, err)
	}
}
