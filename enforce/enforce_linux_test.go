//go:build linux

package enforce

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

func curl(a lab.As, url string, extra ...string) error {
	_, err := a.Run(append([]string{"curl", "-sS", "--max-time", "2", url}, extra...)...)
	return err
}

// sendUDP sends one datagram tagged tag to the UDP counter. A dropped
// send fails with EPERM, so the exit status is not checked: the counter
// tells what arrived.
func (l *enforceLab) sendUDP(a lab.As, tag string) {
	_, _ = a.Run("bash", "-c", "echo "+tag+" | socat -u - UDP4-SENDTO:"+lab.ServerIP4+":9999")
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

// listenLog collects what the default rule logs in the client namespace.
func (l *enforceLab) listenLog(t *testing.T) func() []LogEntry {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []LogEntry
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- ListenLog(ctx, l.target, 77, ready, func(e LogEntry) { mu.Lock(); got = append(got, e); mu.Unlock() })
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("listen nflog: %v", err)
	}
	t.Cleanup(cancel)
	return func() []LogEntry {
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return append([]LogEntry(nil), got...)
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
		if out := a.MustRun(t, "dig", "+short", "+time=2", "web.lab"); !strings.Contains(out, lab.ServerIP4) {
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
	l.sendUDP(l.other, "other-learned")

	before := l.defaultPackets(t)
	// The same destinations for another user are dropped.
	if err := curl(l.other, "http://web.lab:8080/", "-4"); err == nil {
		t.Error("uid 4242 reached nobody's ipv4 destination")
	}
	if err := curl(l.other, "http://web.lab:8080/", "-6"); err == nil {
		t.Error("uid 4242 reached nobody's ipv6 destination")
	}
	l.sendUDP(l.nobody, "nobody-unlearned")
	// An unseen destination is dropped.
	if err := curl(l.nobody, "http://10.77.0.1:8081/"); err == nil {
		t.Error("nobody reached an unseen destination")
	}
	if err := curl(l.nobody, "http://[fd77::1]:8081/"); err == nil {
		t.Error("nobody reached an unseen ipv6 destination")
	}
	time.Sleep(100 * time.Millisecond)
	if n := l.udp.count("other-learned"); n != 1 {
		t.Errorf("learned udp flow: %d datagrams arrived, want 1", n)
	}
	if n := l.udp.count("nobody-unlearned"); n != 0 {
		t.Errorf("unlearned udp flow: %d datagrams arrived, want 0", n)
	}
	after := l.defaultPackets(t)
	if after-before < 5 {
		t.Errorf("default drop counter went from %d to %d, want at least 5 more", before, after)
	}
	entries := logs()
	for _, w := range []struct {
		uid  uint32
		dst  string
		port uint16
	}{{4242, lab.ServerIP4, 8080}, {4242, lab.ServerIP6, 8080}, {65534, lab.ServerIP4, 8081}, {65534, lab.ServerIP4, 9999}} {
		if !hasLog(entries, "drop", w.uid, w.dst, w.port) {
			t.Errorf("no NFLOG drop entry for uid %d to %s port %d (got %d entries)", w.uid, w.dst, w.port, len(entries))
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
	time.Sleep(100 * time.Millisecond)
	if l.udp.count("audit-udp") != 1 {
		t.Error("audit mode blocked a datagram")
	}
	if n := l.defaultPackets(t); n < 3 {
		t.Errorf("audit counter = %d, want at least 3", n)
	}
	entries := logs()
	if !hasLog(entries, "audit", 4242, lab.ServerIP4, 8080) || !hasLog(entries, "audit", 65534, lab.ServerIP6, 8081) {
		t.Errorf("audit log entries missing: %+v", entries)
	}
	for _, e := range entries {
		if e.Action != "audit" {
			t.Errorf("audit mode logged %+v", e)
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
	if err := curl(l.nobody, "http://10.77.0.1:8081/"); err == nil {
		t.Error("the rejected table's new element took effect")
	}
}

// TestReplaceUnderLoad: 40 replaces while a client connects in a loop:
// no allowed connection fails.
func TestReplaceUnderLoad(t *testing.T) {
	l := newEnforceLab(t)
	plans := []*Plan{l.apply(t, ModeEnforce), Build(labBaseline(), labOptions(ModeEnforce))}
	plans[1].Sets[0].Elements = append(plans[1].Sets[0].Elements, Element{UID: 1, IP: netip.MustParseAddr("192.0.2.1"), Proto: ProtoTCP, Port: 1})

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- lab.InNetns(l.pair.Client, func() error {
			d := net.Dialer{Timeout: 2 * time.Second}
			for {
				select {
				case <-stop:
					return nil
				default:
				}
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
	for i := 0; i < 40; i++ {
		if _, err := Apply(plans[i%2], l.target); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connections during 40 replaces, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d allowed connections failed during replaces (first: %v)", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d connections were made", ok.Load())
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
