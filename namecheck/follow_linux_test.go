//go:build linux

package namecheck_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
	"github.com/egresskit/egress/store"
)

// followPool is how many addresses name1.lab and name2.lab rotate over:
// every answer gives the next one, so a connection right after an answer
// goes to an address nobody connected to before.
const followPool = 4

// followWindow is the follower's mark window: the lab checks names past
// it too, when only the follow sets let a connection through.
const followWindow = 2 * time.Second

// flab: an HTTPS server on every address of a pool (one certificate for
// name1.lab and name2.lab), a DNS server giving both names the next pool
// address at each query, and a table whose only way for user A to the
// pool is its follow rule for name1.lab on TCP 443; the DNS follower and
// the name check (as "egress-enforce follow" and "namecheck" run them,
// sharing a bpf file system) on the client's cgroup. User A+1 learned
// every pool address on 443 without names (no follow rule).
type flab struct {
	t      *testing.T
	pair   *lab.Pair
	cg     *lab.Cgroup
	next   atomic.Uint32
	nc     atomic.Pointer[namecheck.Checker]
	mu     sync.Mutex
	sni    []string
	events []namecheck.Event
}

func poolAddr(i int) string { return fmt.Sprintf("10.77.2.%d", i) }

func newFollowLab(t *testing.T, mode string) *flab {
	lab.Require(t, "nft", "curl")
	l := &flab{t: t, pair: lab.NewPair(t), cg: lab.NewCgroup(t)}
	for i := 1; i <= followPool; i++ {
		lab.MustRun(t, "ip", "-n", l.pair.Server.Name, "addr", "add", poolAddr(i)+"/32", "dev", "veth0")
	}
	lab.MustRun(t, "ip", "-n", l.pair.Client.Name, "route", "add", "10.77.2.0/24", "dev", "veth1")
	l.serveTLS(t)
	lab.ServeDNS(t, l.pair.Server, lab.ServerIP4+":53", l.answer)
	st, target := l.applyTable(t, mode)

	pins := lab.NewBPFFS(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The name check first: it creates the shared view, the follower
	// takes it.
	ncReady := make(chan struct{})
	wg.Go(func() {
		err := namecheck.Run(ctx, namecheck.RunConfig{Cgroup: l.cg.Path, Target: target, Table: plan.DefaultTable, Store: st,
			Reload: 100 * time.Millisecond, PinRoot: pins, Ready: ncReady, OnChecker: func(c *namecheck.Checker) { l.nc.Store(c) },
			OnEvent: func(e namecheck.Event) { l.mu.Lock(); l.events = append(l.events, e); l.mu.Unlock() }})
		if err != nil {
			t.Errorf("name check: %v", err)
		}
	})
	<-ncReady
	fready := make(chan struct{})
	f, err := follow.Start(follow.Config{Cgroup: l.cg.Path, Target: target, Table: plan.DefaultTable, Store: st,
		Resolvers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, Window: followWindow, Ready: fready, PinRoot: pins})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if err := f.Run(ctx); err != nil {
			t.Errorf("follower: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("stop the follower: %v", err)
		}
	})
	<-fready
	return l
}

// serveTLS answers HTTPS on port 443 of every server address and notes
// the name each client presented.
func (l *flab) serveTLS(t *testing.T) {
	cert := selfSigned(t, "name1.lab", "name2.lab")
	conf := &tls.Config{GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		l.mu.Lock()
		l.sni = append(l.sni, hi.ServerName)
		l.mu.Unlock()
		return &cert, nil
	}}
	var ln net.Listener
	if err := lab.InNetns(l.pair.Server, func() (err error) { ln, err = net.Listen("tcp", ":443"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello ", r.TLS.ServerName) })}
	go func() { _ = srv.Serve(tls.NewListener(ln, conf)) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// answer gives name1.lab and name2.lab the next pool address.
func (l *flab) answer(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	if (q.Name == "name1.lab." || q.Name == "name2.lab.") && q.Qtype == dns.TypeA {
		n := int(l.next.Add(1)-1)%followPool + 1
		m.Answer = append(m.Answer, lab.A(q.Name, poolAddr(n), 60))
	}
	_ = w.WriteMsg(m)
}

// applyTable applies the table: user A follows name1.lab on TCP 443
// and learned only the DNS server; user A+1 learned the pool on 443.
func (l *flab) applyTable(t *testing.T, mode string) (*store.Store, nft.Target) {
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	server := netip.MustParseAddr(lab.ServerIP4)
	flows := []store.Flow{{FlowKey: store.FlowKey{UID: userA, Proto: plan.ProtoTCP, IP: server, Port: 8443}, Hits: 2, FirstSeen: now, LastSeen: now}}
	for i := 1; i <= followPool; i++ {
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: userA + 1, Proto: plan.ProtoTCP, IP: netip.MustParseAddr(poolAddr(i)), Port: 443},
			Hits: 2, FirstSeen: now, LastSeen: now})
	}
	if err := st.Apply(&store.Batch{Flows: flows}); err != nil {
		t.Fatal(err)
	}
	target := nft.Target{Netns: l.pair.Client.Name}
	all, err := st.Flows()
	if err != nil {
		t.Fatal(err)
	}
	p := plan.Build(all, plan.Options{Mode: plan.ModeEnforce, NameCheck: mode, DNSServers: []netip.Addr{server},
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth, Names: []plan.NameRule{{UID: userA, Name: "name1.lab", Proto: plan.ProtoTCP, Port: 443}}}})
	if _, _, err := rollout.Apply(nft.Open(target), p, rollout.Options{Store: st}); err != nil {
		t.Fatal(err)
	}
	return st, target
}

func (l *flab) user(uid uint32) lab.As {
	return lab.As{UID: uid, GID: uid, Netns: l.pair.Client, Cgroup: l.cg}
}

// curl fetches https://NAME/ as a, with extra curl arguments first.
func curlArgs(name string, extra ...string) []string {
	return append(append([]string{"curl", "-sS", "-k", "--max-time", "30"}, extra...), "https://"+name+"/")
}

func (l *flab) dropped() uint64 {
	c := l.nc.Load()
	if c == nil {
		l.t.Fatal("no checker")
	}
	s, err := c.Stats()
	if err != nil {
		l.t.Fatal(err)
	}
	return s.Dropped
}

// blocked runs a curl that the name check must stop (its ClientHello
// dropped, then again).
func (l *flab) blocked(a lab.As, args ...string) {
	l.t.Helper()
	before := l.dropped()
	if err := a.Blocked(func() bool { return l.dropped() >= before+2 }, args...); err != nil {
		l.t.Fatal(err)
	}
}

func (l *flab) sawSNI(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.sni, name)
}

// eventsFor are the name check's events for name: their addresses.
func (l *flab) eventsFor(name string, enforced bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if e.Name == name && e.UID == userA && e.Verdict == "mismatch" && e.Enforced == enforced && e.Port == 443 {
			out = append(out, e.IP.String())
		}
	}
	return out
}

// TestNameCheckFollowedEnforce: user A's follow rule allows name1.lab
// only. name1.lab passes at the address the follower opened; name2.lab
// presented at a followed address is stopped and reported with its name,
// also on the first connection right after the DNS answer (curl
// --connect-to: resolve name1.lab, connect at once to its new address,
// present name2.lab); user A+1, without the rule, is not name-checked.
func TestNameCheckFollowedEnforce(t *testing.T) {
	l := newFollowLab(t, plan.NameCheckEnforce)
	a := l.user(userA)
	resolved := time.Now()
	if out := a.MustRun(t, curlArgs("name1.lab")...); out != "hello name1.lab" {
		t.Fatalf("name1.lab: %q", out)
	}
	first := poolAddr(1)
	// The first connection after each answer, each to a new address.
	for i := 2; i <= followPool; i++ {
		l.blocked(a, curlArgs("name2.lab", "--connect-to", "name2.lab:443:name1.lab:443")...)
		if want := poolAddr(i); !slices.Contains(l.eventsFor("name2.lab", true), want) {
			lab.Await(t, "the event of name2.lab at "+want, func() bool { return slices.Contains(l.eventsFor("name2.lab", true), want) })
		}
	}
	// Later, past the mark window, at an address the follow sets hold.
	lab.WaitFor(t, func() bool { return time.Since(resolved) > followWindow })
	l.blocked(a, curlArgs("name2.lab", "--resolve", "name2.lab:443:"+first)...)
	lab.Await(t, "the event of name2.lab at "+first, func() bool { return slices.Contains(l.eventsFor("name2.lab", true), first) })
	if l.sawSNI("name2.lab") {
		t.Fatal("the server was asked for name2.lab by user A")
	}
	if out := a.MustRun(t, curlArgs("name1.lab", "--resolve", "name1.lab:443:"+first)...); out != "hello name1.lab" {
		t.Fatalf("name1.lab again: %q", out)
	}
	// User A+1 has no follow rule: its learned addresses are not checked.
	if out := l.user(userA+1).MustRun(t, curlArgs("name2.lab", "--resolve", "name2.lab:443:"+first)...); out != "hello name2.lab" {
		t.Fatalf("user A+1: %q", out)
	}
	s, _ := l.nc.Load().Stats()
	t.Logf("name check %+v; events %v", s, l.eventsFor("name2.lab", true))
	if s.Mismatch < followPool || s.Passed < 2 {
		t.Errorf("stats %+v", s)
	}
}

// TestNameCheckFollowedAudit: in audit the first connection presenting
// name2.lab at a just-followed address passes, and is reported.
func TestNameCheckFollowedAudit(t *testing.T) {
	l := newFollowLab(t, plan.NameCheckAudit)
	a := l.user(userA)
	out := a.MustRun(t, curlArgs("name2.lab", "--connect-to", "name2.lab:443:name1.lab:443")...)
	if out != "hello name2.lab" {
		t.Fatalf("audit: %q", out)
	}
	lab.Await(t, "the audit event", func() bool { return slices.Contains(l.eventsFor("name2.lab", false), poolAddr(1)) })
	if s, _ := l.nc.Load().Stats(); s.Dropped != 0 || s.Mismatch != 1 {
		t.Fatalf("audit stats %+v", s)
	}
	if strings.Contains(out, "name1") {
		t.Fatal(out)
	}
}
