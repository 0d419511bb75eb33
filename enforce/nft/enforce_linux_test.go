//go:build linux

package nft_test

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

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
)

// nflogEntries is what the default rule logged, as it arrives.
type nflogEntries struct {
	mu  sync.Mutex
	got []monitor.LogEntry
}

func (n *nflogEntries) all() []monitor.LogEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]monitor.LogEntry(nil), n.got...)
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
func listenLog(t *testing.T, l *nfttest.Lab) *nflogEntries {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &nflogEntries{}
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- monitor.ListenLog(ctx, l.Target, 77, ready, func(e monitor.LogEntry) { n.mu.Lock(); n.got = append(n.got, e); n.mu.Unlock() })
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
func countedIsLogged(t *testing.T, l *nfttest.Lab, logs *nflogEntries) uint64 {
	t.Helper()
	var counted uint64
	var logged int
	if !lab.Eventually(func() bool {
		counted, logged = l.DefaultPackets(t), len(logs.all())
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

// onlyLogged waits for the wanted entries, checks that every packet the
// default rule counted was logged, and that each was logged as action.
func onlyLogged(t *testing.T, l *nfttest.Lab, logs *nflogEntries, action string, wants ...logWant) {
	t.Helper()
	awaitLogged(t, logs, action, wants...)
	countedIsLogged(t, l, logs)
	for _, e := range logs.all() {
		if e.Action != action {
			t.Errorf("logged %s, want only %s; all:%s", e.Action, action, logs)
		}
	}
}

func hasLog(entries []monitor.LogEntry, action string, uid uint32, dst string, port uint16) bool {
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
	l := nfttest.NewLab(t)
	logs := listenLog(t, l)
	l.Apply(t, plan.ModeEnforce)

	// DNS keeps working, for any user.
	for _, a := range []lab.As{l.Nobody, l.Other} {
		if out := a.MustRun(t, "dig", "+short", "+time=10", "web.lab"); !strings.Contains(out, lab.ServerIP4) {
			t.Errorf("uid %d: dig web.lab = %q", a.UID, out)
		}
	}
	// Learned flows pass, through names resolved by dnsmasq.
	if err := nfttest.Curl(l.Nobody, "http://web.lab:8080/", "-4"); err != nil {
		t.Errorf("learned ipv4 flow dropped: %v", err)
	}
	if err := nfttest.Curl(l.Nobody, "http://web.lab:8080/", "-6"); err != nil {
		t.Errorf("learned ipv6 flow dropped: %v", err)
	}
	// A datagram nobody never sent before is dropped; uid 4242's learned
	// one, sent after it, arrives (and shows that nothing sent before it
	// is still on its way).
	if err := l.BlockedUDP(t, l.Nobody, "nobody-unlearned"); err != nil {
		t.Errorf("unlearned udp flow: %v", err)
	}
	l.SendUDP(l.Other, "other-learned")

	// The same destinations for another user are dropped.
	if err := l.BlockedTCP(t, l.Other, "http://web.lab:8080/", "-4"); err != nil {
		t.Errorf("uid 4242 to nobody's ipv4 destination: %v", err)
	}
	if err := l.BlockedTCP(t, l.Other, "http://web.lab:8080/", "-6"); err != nil {
		t.Errorf("uid 4242 to nobody's ipv6 destination: %v", err)
	}
	// An unseen destination is dropped.
	if err := l.BlockedTCP(t, l.Nobody, "http://10.77.0.1:8081/"); err != nil {
		t.Errorf("nobody to an unseen destination: %v", err)
	}
	if err := l.BlockedTCP(t, l.Nobody, "http://[fd77::1]:8081/"); err != nil {
		t.Errorf("nobody to an unseen ipv6 destination: %v", err)
	}
	if !lab.Eventually(func() bool { return l.UDP.Count("other-learned") == 1 }) {
		t.Errorf("learned udp flow: %d datagrams arrived, want 1", l.UDP.Count("other-learned"))
	}
	if n := l.UDP.Count("nobody-unlearned"); n != 0 {
		t.Errorf("unlearned udp flow: %d datagrams arrived, want 0", n)
	}
	// Each drop is logged with its user and destination, and counted.
	onlyLogged(t, l, logs, "drop", logWant{4242, lab.ServerIP4, 8080}, logWant{4242, lab.ServerIP6, 8080},
		logWant{65534, lab.ServerIP4, 8081}, logWant{65534, lab.ServerIP6, 8081}, logWant{65534, lab.ServerIP4, 9999})
}

// TestAuditBlocksNothing: in audit mode the same traffic passes, and the
// default rule counts and logs it.
func TestAuditBlocksNothing(t *testing.T) {
	l := nfttest.NewLab(t)
	logs := listenLog(t, l)
	l.Apply(t, plan.ModeAudit)
	if err := nfttest.Curl(l.Other, "http://10.77.0.1:8080/"); err != nil {
		t.Errorf("audit mode blocked uid 4242: %v", err)
	}
	if err := nfttest.Curl(l.Nobody, "http://[fd77::1]:8081/"); err != nil {
		t.Errorf("audit mode blocked an unseen ipv6 destination: %v", err)
	}
	l.SendUDP(l.Nobody, "audit-udp")
	if !lab.Eventually(func() bool { return l.UDP.Count("audit-udp") == 1 }) {
		t.Errorf("audit mode: %d datagrams arrived, want 1", l.UDP.Count("audit-udp"))
	}
	onlyLogged(t, l, logs, "audit", logWant{4242, lab.ServerIP4, 8080}, logWant{65534, lab.ServerIP6, 8081},
		logWant{65534, lab.ServerIP4, 9999})
}

// TestRejectedBatchKeepsTheOldTable: a batch the kernel refuses leaves the
// previous table in place and working.
func TestRejectedBatchKeepsTheOldTable(t *testing.T) {
	l := nfttest.NewLab(t)
	l.Apply(t, plan.ModeEnforce)
	bad := plan.Build(append(nfttest.Baseline(), plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8081, 1, plantest.T0)), nfttest.Options(plan.ModeAudit))
	// Inject a fault: an element whose key the kernel cannot take.
	bad.Sets[0].Elements = append(bad.Sets[0].Elements, plan.Element{UID: 1, Proto: plan.ProtoTCP, Port: 1})
	_, err := nft.Open(l.Target).Apply(bad)
	if !errors.Is(err, nft.ErrRejected) {
		t.Fatalf("apply of a bad batch: err = %v, want ErrRejected", err)
	}
	st, err := nft.Open(l.Target).Status(plan.DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != plan.ModeEnforce || st.Sets[0].Elements != 3 {
		t.Errorf("after a rejected batch: %+v", st)
	}
	if err := nfttest.Curl(l.Nobody, "http://10.77.0.1:8080/"); err != nil {
		t.Errorf("the old table stopped allowing a learned flow: %v", err)
	}
	if err := l.BlockedTCP(t, l.Nobody, "http://10.77.0.1:8081/"); err != nil {
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
	l := nfttest.NewLab(t)
	logs := listenLog(t, l)
	plans := []*plan.Plan{l.Apply(t, plan.ModeEnforce), plan.Build(nfttest.Baseline(), nfttest.Options(plan.ModeEnforce))}
	plans[1].Sets[0].Elements = append(plans[1].Sets[0].Elements, plan.Element{UID: 1, IP: netip.MustParseAddr("192.0.2.1"), Proto: plan.ProtoTCP, Port: 1})

	var attempts, ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(stopLoad)
	done := make(chan error, 1)
	go func() {
		done <- lab.InNetns(l.Pair.Client, func() error {
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
		if _, err := nft.Open(l.Target).Apply(plans[i%2]); err != nil {
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
	if st, err := nft.Open(l.Target).Status(plan.DefaultTable, false); err != nil || st.Sets[0].Elements != len(plans[(replaces-1)%2].Sets[0].Elements) {
		t.Errorf("after the replaces the table is not the last plan: %+v, %v", st, err)
	}
	// A drop after the load: once its entry is in, every earlier entry is.
	if err := l.BlockedUDP(t, l.Nobody, "barrier"); err != nil {
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
	l := nfttest.NewLab(t)
	lab.MustRun(t, "ip", "netns", "exec", l.Pair.Client.Name, "nft", "add table inet other; add chain inet other c")
	l.Apply(t, plan.ModeEnforce)
	removed, err := nft.Open(l.Target).Remove(plan.DefaultTable)
	if err != nil || !removed {
		t.Fatalf("remove = %v, %v", removed, err)
	}
	out := lab.MustRun(t, "ip", "netns", "exec", l.Pair.Client.Name, "nft", "list", "ruleset")
	if strings.Contains(out, "egress") {
		t.Errorf("after remove the ruleset still mentions egress:\n%s", out)
	}
	if !strings.Contains(out, "table inet other") {
		t.Errorf("remove touched another table:\n%s", out)
	}
	removed, err = nft.Open(l.Target).Remove(plan.DefaultTable)
	if err != nil || removed {
		t.Errorf("second remove = %v, %v; want a no-op", removed, err)
	}
	if err := nfttest.Curl(l.Other, "http://10.77.0.1:8080/"); err != nil {
		t.Errorf("traffic blocked after remove: %v", err)
	}
}

// TestDiffAgainstKernel: diff names the elements and rules apply would
// add and remove, and the mode change.
func TestDiffAgainstKernel(t *testing.T) {
	l := nfttest.NewLab(t)
	p0 := plan.Build(nfttest.Baseline(), nfttest.Options(plan.ModeAudit))
	d, err := nft.Diff(nft.Open(l.Target), p0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Present || len(d.Added) != 4 {
		t.Errorf("diff against nothing: %+v", d)
	}
	if _, err := nft.Open(l.Target).Apply(p0); err != nil {
		t.Fatal(err)
	}
	flows := append(nfttest.Baseline()[1:], plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8081, 1, plantest.T0))
	p1 := plan.Build(flows, nfttest.Options(plan.ModeEnforce))
	d, err = nft.Diff(nft.Open(l.Target), p1)
	if err != nil {
		t.Fatal(err)
	}
	if d.ModeFrom != plan.ModeAudit || d.ModeTo != plan.ModeEnforce {
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
	if _, err := nft.Open(l.Target).Apply(p1); err != nil {
		t.Fatal(err)
	}
	d, err = nft.Diff(nft.Open(l.Target), p1)
	if err != nil || !d.Empty() {
		t.Errorf("diff after apply: %+v, %v", d, err)
	}
}
