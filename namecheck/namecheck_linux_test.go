//go:build linux

package namecheck_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
)

func TestMain(m *testing.M) {
	if os.Getenv("NC_CLIENT") == "1" {
		args := os.Args[1:]
		if len(args) == 4 && strings.HasPrefix(args[0], "bench-") {
			n, _ := strconv.Atoi(args[1])
			first, _ := hex.DecodeString(args[3])
			d, err := runBench(strings.TrimPrefix(args[0], "bench-"), n, args[2], first)
			if err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			fmt.Println(d.Nanoseconds())
			os.Exit(0)
		}
		os.Exit(runClient(args[len(args)-3:]))
	}
	os.Exit(m.Run())
}

const userA = 4321

// nlab is one address serving two names over HTTPS (443) and HTTP (80),
// a client namespace and cgroup, and the name check attached to it.
type nlab struct {
	t      testing.TB
	pair   *lab.Pair
	cg     *lab.Cgroup
	nc     *namecheck.Checker
	cookie uint64
	learn  bool
	done   chan struct{} // closed when the events reader ends
	client string        // the test binary, where user A can run it
	mu     sync.Mutex
	seen   []string // names the servers were asked for (SNI or Host)
	events []namecheck.Event
}

func newLab(t *testing.T) *nlab { return newLabWith(t, false) }

// newBenchLab is a lab whose client may reuse its ports in TIME_WAIT: a
// storm of a few thousand connections a round would run out of them.
func newBenchLab(b *testing.B) *nlab {
	l := newLabWith(b, false)
	lab.MustRun(b, "ip", "netns", "exec", l.pair.Client.Name, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000")
	return l
}

func newLabWith(t testing.TB, learn bool) *nlab {
	lab.Require(t)
	l := &nlab{t: t, pair: lab.NewPair(t), cg: lab.NewCgroup(t), learn: learn}
	l.serve(t)
	var err error
	if l.cookie, err = follow.EnforcedNetns(nft.Target{Netns: l.pair.Client.Name}); err != nil {
		t.Fatal(err)
	}
	l.attach(t)
	t.Cleanup(func() { l.detach(t) })
	l.client = copyClient(t)
	return l
}

// attach starts the name check on the lab's cgroup (if it is not).
func (l *nlab) attach(t testing.TB) {
	if l.nc != nil {
		return
	}
	var err error
	if l.nc, err = namecheck.Start(namecheck.Config{Cgroup: l.cg.Path, NetnsCookie: l.cookie, Learn: l.learn}); err != nil {
		t.Fatal(err)
	}
	l.readEvents()
}

// readEvents gathers l.nc's events in l.events until it is closed (done
// is closed then).
func (l *nlab) readEvents() {
	l.done = make(chan struct{})
	go func(c *namecheck.Checker, done chan struct{}) {
		defer close(done)
		_ = c.Events(func(e namecheck.Event) {
			l.mu.Lock()
			l.events = append(l.events, e)
			l.mu.Unlock()
		})
	}(l.nc, l.done)
}

// detach stops it (if it runs).
func (l *nlab) detach(testing.TB) {
	if l.nc == nil {
		return
	}
	l.nc.Close()
	<-l.done
	l.nc = nil
}

// copyClient puts the test binary where another user may run it.
func copyClient(t testing.TB) string { return lab.PublicCopy(t, os.Args[0], "client") }

func selfSigned(t testing.TB, names ...string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serve runs the HTTPS and HTTP servers of both names on the server's
// one address; each records the name it was asked for.
func (l *nlab) serve(t testing.TB) {
	cert := selfSigned(t, "name1.lab", "name2.lab")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.Host, ":")
		l.note("host " + host)
		fmt.Fprintf(w, "hello %s", host)
	})
	tlsConf := &tls.Config{GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		l.note("sni " + hi.ServerName)
		return &cert, nil
	}}
	for _, addr := range []string{lab.ServerIP4 + ":443", lab.ServerIP4 + ":80", "[" + lab.ServerIP6 + "]:443"} {
		var ln net.Listener
		err := lab.InNetns(l.pair.Server, func() (err error) {
			ln, err = net.Listen("tcp", addr)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ErrorLog: nil}
		if strings.HasSuffix(addr, ":443") {
			ln = tls.NewListener(ln, tlsConf)
		}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
}

func (l *nlab) note(s string) {
	l.mu.Lock()
	l.seen = append(l.seen, s)
	l.mu.Unlock()
}

func (l *nlab) saw(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.seen, s)
}

func (l *nlab) eventsFor(name string) []namecheck.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []namecheck.Event
	for _, e := range l.events {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// awaitNoName waits for the event of a connection dropped for showing
// no name, of kind (tls, http, none).
func (l *nlab) awaitNoName(kind string) {
	l.t.Helper()
	lab.Await(l.t, "the no-name event", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return slices.ContainsFunc(l.events, func(e namecheck.Event) bool {
			return e.Verdict == "no_name" && e.Kind == kind && e.Enforced
		})
	})
}

// set makes user A's destinations on the address name-checked, with
// name1.lab allowed.
func (l *nlab) set(mode namecheck.Mode) {
	ip := netip.MustParseAddr(lab.ServerIP4)
	err := l.nc.Set([]namecheck.Dest{
		{UID: userA, IP: ip, Proto: 6, Port: 443, Mode: mode, Names: []string{"name1.lab"}},
		{UID: userA, IP: ip, Proto: 6, Port: 80, Mode: mode, Names: []string{"NAME1.lab."}},
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

func (l *nlab) as() lab.As {
	return lab.As{UID: userA, GID: userA, Netns: l.pair.Client, Cgroup: l.cg}
}

func (l *nlab) cmd(mode, name, port string) []string {
	return []string{"env", "NC_CLIENT=1", l.client, mode, name, net.JoinHostPort(lab.ServerIP4, port)}
}

// answered runs a client that must get through and be answered for
// name; what says which case failed.
func (l *nlab) answered(what, mode, name, port string) {
	l.t.Helper()
	if out := l.as().MustRun(l.t, l.cmd(mode, name, port)...); out != "hello "+name {
		l.t.Fatalf("%s: %q", what, out)
	}
}

func (l *nlab) stats() namecheck.Stats {
	s, err := l.nc.Stats()
	if err != nil {
		l.t.Fatal(err)
	}
	return s
}

// blocked runs a client that must be stopped: it waits until the kernel
// dropped the refused segment and its retransmission.
func (l *nlab) blocked(mode, name, port string) {
	l.t.Helper()
	before := l.stats().Dropped
	err := l.as().Blocked(func() bool { return l.stats().Dropped >= before+2 }, l.cmd(mode, name, port)...)
	if err != nil {
		l.t.Fatal(err)
	}
}

func TestNameCheckEnforce(t *testing.T) {
	l := newLab(t)
	l.set(namecheck.Enforce)

	l.answered("name1 over TLS", "tls", "name1.lab", "443")
	l.answered("name1 over HTTP (Host after a long request line)", "http", "name1.lab", "80")
	l.blocked("tls", "name2.lab", "443")
	l.blocked("http", "name2.lab", "80")
	if l.saw("sni name2.lab") || l.saw("host name2.lab") {
		t.Fatalf("the server was asked for name2.lab: %v", l.seen)
	}
	lab.Await(t, "the mismatch events", func() bool { return len(l.eventsFor("name2.lab")) >= 2 })
	for _, e := range l.eventsFor("name2.lab") {
		if !e.Enforced || e.Verdict != "mismatch" || e.UID != userA || e.IP.String() != lab.ServerIP4 {
			t.Errorf("event %+v", e)
		}
	}
	// Another user, and other destinations, are not name-checked.
	other := lab.As{UID: userA + 1, GID: userA + 1, Netns: l.pair.Client, Cgroup: l.cg}
	if out := other.MustRun(t, l.cmd("tls", "name2.lab", "443")...); out != "hello name2.lab" {
		t.Fatalf("another user: %q", out)
	}
	s := l.stats()
	t.Logf("stats %+v", s)
	if s.Passed < 2 || s.Mismatch < 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestNameCheckAudit(t *testing.T) {
	l := newLab(t)
	l.set(namecheck.Audit)
	l.answered("name2 in audit", "tls", "name2.lab", "443")
	l.answered("name2 over HTTP in audit", "http", "name2.lab", "80")
	lab.Await(t, "the audit events", func() bool { return len(l.eventsFor("name2.lab")) >= 2 })
	kinds := []string{}
	for _, e := range l.eventsFor("name2.lab") {
		if e.Enforced || e.Verdict != "mismatch" {
			t.Errorf("audit event %+v", e)
		}
		kinds = append(kinds, e.Kind)
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"http", "tls"}) {
		t.Errorf("kinds %v", kinds)
	}
	if s := l.stats(); s.Dropped != 0 {
		t.Fatalf("audit dropped: %+v", s)
	}
}

func TestNameCheckSplitClientHello(t *testing.T) {
	l := newLab(t)
	l.set(namecheck.Enforce)
	l.answered("split name1", "tls-split", "name1.lab", "443")
	if s := l.stats(); s.Gathered < 1 || s.Passed < 1 {
		t.Fatalf("the ClientHello was not gathered over two segments: %+v", s)
	}
	l.blocked("tls-split", "name2.lab", "443")
	if l.saw("sni name2.lab") {
		t.Fatalf("the server read a split ClientHello for name2.lab")
	}
	lab.Await(t, "the split mismatch event", func() bool { return len(l.eventsFor("name2.lab")) >= 1 })
}

func TestNameCheckGarbage(t *testing.T) {
	l := newLab(t)
	l.set(namecheck.Enforce)
	before := l.stats()
	l.blocked("raw", hex.EncodeToString([]byte("\x00\x01 not tls at all\r\n")), "443")
	s := l.stats()
	if s.NoName <= before.NoName {
		t.Fatalf("garbage not counted as no name: %+v", s)
	}
	l.awaitNoName("none")
}

// TestNameCheckDripFailsClosed: a ClientHello sent a byte a segment, more
// segments than the kernel gathers before its name, is refused as showing
// no name (enforce), not passed unchecked; the allowed name too.
func TestNameCheckDripFailsClosed(t *testing.T) {
	l := newLab(t)
	l.set(namecheck.Enforce)
	l.blocked("tls-drip", "name1.lab", "443")
	if l.saw("sni name1.lab") {
		t.Fatal("the server read a dripped ClientHello")
	}
	l.awaitNoName("tls")
	if s := l.stats(); s.Gathered != 8 {
		t.Errorf("gathered %d segments, want the bound, 8", s.Gathered)
	}
}

// TestNameCheckIPv6: the same check on an IPv6 destination.
func TestNameCheckIPv6(t *testing.T) {
	l := newLab(t)
	ip := netip.MustParseAddr(lab.ServerIP6)
	if err := l.nc.Set([]namecheck.Dest{{UID: userA, IP: ip, Proto: 6, Port: 443, Mode: namecheck.Enforce, Names: []string{"name1.lab"}}}); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(lab.ServerIP6, "443")
	if out := l.as().MustRun(t, "env", "NC_CLIENT=1", l.client, "tls", "name1.lab", addr); out != "hello name1.lab" {
		t.Fatalf("name1 over IPv6: %q", out)
	}
	before := l.stats().Dropped
	if err := l.as().Blocked(func() bool { return l.stats().Dropped >= before+2 }, "env", "NC_CLIENT=1", l.client, "tls", "name2.lab", addr); err != nil {
		t.Fatal(err)
	}
	lab.Await(t, "the IPv6 mismatch event", func() bool {
		es := l.eventsFor("name2.lab")
		return len(es) == 1 && es[0].IP == ip && es[0].Enforced
	})
}

// TestNameCheckWildcard: a "*.suffix" name allows names up to four labels
// deeper, not the suffix itself nor deeper names.
func TestNameCheckWildcard(t *testing.T) {
	l := newLab(t)
	ip := netip.MustParseAddr(lab.ServerIP4)
	if err := l.nc.Set([]namecheck.Dest{{UID: userA, IP: ip, Proto: 6, Port: 443, Mode: namecheck.Enforce, Names: []string{"*.wild.lab"}}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a.wild.lab", "a.b.c.d.wild.lab"} {
		l.answered(n, "tls", n, "443")
	}
	for _, n := range []string{"wild.lab", "a.b.c.d.e.wild.lab", "a.wildxlab"} {
		l.blocked("tls", n, "443")
	}
}

// TestNameCheckPinnedOutlivesItsChecker: a pinned check whose checker
// dies keeps refusing with its last destinations (and keeps dropping a
// socket it refused); the next checker takes it over, and a clean detach
// removes it.
func TestNameCheckPinnedOutlivesItsChecker(t *testing.T) {
	l := newLab(t)
	l.detach(t)
	pin := filepath.Join(lab.NewBPFFS(t), "nc")
	if err := os.MkdirAll(pin, 0o700); err != nil {
		t.Fatal(err)
	}
	start := func() *namecheck.Checker {
		c, err := namecheck.Start(namecheck.Config{Cgroup: l.cg.Path, NetnsCookie: l.cookie, PinDir: pin})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start()
	l.nc = c
	l.set(namecheck.Enforce)
	c.Close() // dies: no Detach
	l.nc = nil
	before := droppedIn(t, pin)
	if err := l.as().Blocked(func() bool { return droppedIn(t, pin) >= before+2 }, l.cmd("tls", "name2.lab", "443")...); err != nil {
		t.Fatalf("with its checker dead: %v", err)
	}
	c = start() // takes over: name1 still allowed, name2 still not
	l.answered("name1 after the take-over", "tls", "name1.lab", "443")
	l.nc = c
	l.blocked("tls", "name2.lab", "443")
	if err := c.Set(nil); err != nil { // the taken-over destinations can be removed
		t.Fatal(err)
	}
	l.answered("name2 once no longer checked", "tls", "name2.lab", "443")
	l.set(namecheck.Enforce)
	if err := c.Detach(); err != nil {
		t.Fatal(err)
	}
	l.nc = nil
	l.answered("name2 after a clean detach", "tls", "name2.lab", "443")
	if _, err := os.Stat(filepath.Join(pin, "namecheck_link")); !os.IsNotExist(err) {
		t.Errorf("the link is still pinned: %v", err)
	}
}

// droppedIn reads the segments dropped from the counters pinned in pin.
func droppedIn(t *testing.T, pin string) uint64 {
	t.Helper()
	s, err := namecheck.PinnedStats(pin)
	if err != nil {
		t.Fatal(err)
	}
	return s.Dropped
}

// TestNameCheckIPv6ExtensionHeaders: a user with CAP_NET_RAW puts a
// destination options header on its IPv6 packets; the check still finds
// the destination and the name (or refuses), it does not let them pass
// unchecked.
func TestNameCheckIPv6ExtensionHeaders(t *testing.T) {
	l := newLab(t)
	ip := netip.MustParseAddr(lab.ServerIP6)
	if err := l.nc.Set([]namecheck.Dest{{UID: userA, IP: ip, Proto: 6, Port: 443, Mode: namecheck.Enforce, Names: []string{"name1.lab"}}}); err != nil {
		t.Fatal(err)
	}
	raw := lab.As{UID: userA, GID: userA, Netns: l.pair.Client, Cgroup: l.cg, Caps: []string{"net_raw"}}
	addr := net.JoinHostPort(lab.ServerIP6, "443")
	if out := raw.MustRun(t, "env", "NC_CLIENT=1", l.client, "tls+dstopts", "name1.lab", addr); out != "hello name1.lab" {
		t.Fatalf("name1 with a destination options header: %q", out)
	}
	before := l.stats().Dropped
	if err := raw.Blocked(func() bool { return l.stats().Dropped >= before+2 }, "env", "NC_CLIENT=1", l.client, "tls+dstopts", "name2.lab", addr); err != nil {
		t.Fatal(err)
	}
	if l.saw("sni name2.lab") {
		t.Fatal("the server read name2.lab")
	}
	lab.Await(t, "the mismatch event", func() bool { return len(l.eventsFor("name2.lab")) == 1 })
}
