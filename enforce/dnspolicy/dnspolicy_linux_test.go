//go:build linux

package dnspolicy

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/internal/lab"
)

// The policy on the real kernel: dnsmasq in a server namespace, dig and
// the helper as clients in a client namespace, inside a child cgroup the
// policy is attached to.

const (
	alice = 1000
	bob   = 1001
)

type env struct {
	t   *testing.T
	p   *lab.Pair
	cg  *lab.Cgroup
	cfg Config

	mu      sync.Mutex
	denials []Denial
}

// newEnv installs the policy with entries in mode, and starts watching
// its denials.
func newEnv(t *testing.T, mode Mode, entries ...Entry) *env {
	t.Helper()
	lab.Require(t, "dnsmasq", "dig")
	e := &env{t: t, p: lab.NewPair(t), cg: lab.NewCgroup(t)}
	lab.StartDNS(t, e.p.Server, []string{lab.ServerIP4, lab.ServerIP6},
		lab.DNSRecord{Name: "www.example.lab", IPs: []string{"10.77.0.80"}},
		lab.DNSRecord{Name: "a.b.cdn.lab", IPs: []string{"10.77.0.81"}},
		lab.DNSRecord{Name: "db.corp.lab", IPs: []string{"10.77.0.82"}})
	e.cfg = Config{Cgroup: e.cg.Path, Target: nft.Target{Netns: e.p.Client.Name}, Table: "egress_test",
		PinRoot: lab.NewBPFFS(t), Mode: mode}
	entries, bad := Dedup(entries)
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	if _, err := Install(e.cfg, entries); err != nil {
		t.Fatal(err)
	}
	// The ring is opened before newEnv returns: a test that removes the
	// policy at once must not take it from under a watcher still starting.
	w, err := OpenWatch(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx, func(d Denial) {
			e.mu.Lock()
			e.denials = append(e.denials, d)
			e.mu.Unlock()
		}); err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *env) as(uid uint32) lab.As {
	return lab.As{UID: uid, GID: uid, Netns: e.p.Client, Cgroup: e.cg}
}

func (e *env) stats() Stats {
	e.t.Helper()
	r := Status(e.cfg)
	if r.Problem != "" {
		e.t.Fatalf("status: %s", r.Problem)
	}
	return r.Stats
}

// dig resolves name as uid and returns the answer (+short).
func (e *env) dig(uid uint32, name string, args ...string) string {
	e.t.Helper()
	full := append([]string{"dig", "+time=2", "+tries=2", "+short", server(args)}, args...)
	return strings.TrimSpace(e.as(uid).MustRun(e.t, append(full, name)...))
}

// stoppedDig runs dig as uid and waits until the policy counted one more
// stopped query (denied or malformed); dig must not get an answer.
func (e *env) stoppedDig(uid uint32, name string, args ...string) {
	e.t.Helper()
	before := e.stats()
	full := append([]string{"dig", "+time=1", "+tries=1", server(args)}, args...)
	err := e.as(uid).Blocked(func() bool {
		s := e.stats()
		return s.Denied+s.Malformed > before.Denied+before.Malformed
	}, append(full, name)...)
	if err != nil {
		e.t.Fatal(err)
	}
}

// denied waits for a denial of name to uid.
func (e *env) denied(uid uint32, name string, dropped bool) Denial {
	e.t.Helper()
	var got Denial
	lab.Await(e.t, "the denial of "+name, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, d := range e.denials {
			if d.UID == uid && d.Name == name && d.Dropped == dropped {
				got = d
				return true
			}
		}
		return false
	})
	return got
}

// helper runs the test binary as a client (see helperMain).
func (e *env) helper(uid uint32, mode string, env ...string) (string, error) {
	a := e.as(uid)
	return a.Run(append([]string{"env", "DP_HELPER=" + mode, "DP_SERVER=" + lab.ServerIP4 + ":53"}, append(env, helperBin)...)...)
}

// stoppedHelper runs the helper until the policy counted one more
// malformed or denied query; it must not get an answer.
func (e *env) stoppedHelper(uid uint32, mode string, msg []byte) {
	e.t.Helper()
	before := e.stats()
	err := e.as(uid).Blocked(func() bool {
		s := e.stats()
		return s.Denied+s.Malformed > before.Denied+before.Malformed
	}, "env", "DP_HELPER="+mode, "DP_SERVER="+lab.ServerIP4+":53", "DP_MSG="+hex.EncodeToString(msg), helperBin)
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) answered(uid uint32, mode string, msg []byte) {
	e.t.Helper()
	if _, err := e.helper(uid, mode, "DP_MSG="+hex.EncodeToString(msg)); err != nil {
		e.t.Fatal(err)
	}
}

var learned = []Entry{
	{UID: alice, Name: "www.example.lab", Source: "learned"},
	{UID: AllUsers, Name: "*.cdn.lab", Source: "dns_allow"},
}

func TestEnforceAllowsLearnedStopsTheRest(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	if got := e.dig(alice, "www.example.lab"); got != "10.77.0.80" {
		t.Fatalf("alice's learned name: got %q, want 10.77.0.80", got)
	}
	// The same name another user never asked for.
	e.stoppedDig(bob, "www.example.lab")
	e.denied(bob, "www.example.lab", true)
	// A random label under a never-asked domain.
	e.stoppedDig(alice, "q2fmzxr0.tunnel.evil")
	d := e.denied(alice, "q2fmzxr0.tunnel.evil", true)
	if d.QType != 1 || d.Proto != "udp" || d.Server.String() != lab.ServerIP4 {
		t.Errorf("denial: %+v", d)
	}
	// dns_allow's wildcard, for every user; not the suffix itself.
	if got := e.dig(bob, "a.b.cdn.lab"); got != "10.77.0.81" {
		t.Fatalf("wildcard for everyone: got %q", got)
	}
	e.stoppedDig(bob, "cdn.lab")
	// Other query types follow the same rule, by question name.
	e.dig(alice, "www.example.lab", "-t", "TXT")
	e.stoppedDig(alice, "80.0.77.10.in-addr.arpa", "-t", "PTR")
	if s := e.stats(); s.Allowed < 3 || s.Denied < 4 {
		t.Errorf("counters: %+v", s)
	}
}

func TestEnforceTCP(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	if got := e.dig(alice, "www.example.lab", "+tcp"); got != "10.77.0.80" {
		t.Fatalf("learned name over TCP: got %q", got)
	}
	e.stoppedDig(alice, "q2fmzxr0.tunnel.evil", "+tcp")
	e.denied(alice, "q2fmzxr0.tunnel.evil", true)
	// Two queries in one segment (as glibc writes A and AAAA): both are
	// checked.
	e.answered(alice, "tcp", tcpFrame(query("www.example.lab"), query("a.cdn.lab")))
	e.stoppedHelper(alice, "tcp", tcpFrame(query("www.example.lab"), query("x.tunnel.evil")))
	// A query split over segments cannot be checked: stopped.
	full := tcpFrame(query("www.example.lab"))
	e.stoppedHelper(alice, "tcp", full[:len(full)-3])
}

func TestAuditPassesAndReports(t *testing.T) {
	e := newEnv(t, Audit, learned...)
	before := e.stats()
	// dnsmasq has no such name: NXDOMAIN, but an answer.
	e.dig(alice, "q2fmzxr0.tunnel.lab")
	d := e.denied(alice, "q2fmzxr0.tunnel.lab", false)
	if d.Dropped {
		t.Errorf("audit dropped: %+v", d)
	}
	e.dig(bob, "www.example.lab", "+tcp")
	e.denied(bob, "www.example.lab", false)
	if s := e.stats(); s.Audited < before.Audited+2 || s.Denied != 0 {
		t.Errorf("counters: before %+v, after %+v", before, s)
	}
	if r := Status(e.cfg); !r.Attached || r.Mode != Audit {
		t.Errorf("status: %+v", r)
	}
}

func TestStatusSaysWhenNotAttached(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	if r := Status(e.cfg); !r.Attached || r.Mode != Enforce || r.Problem != "" || r.Entries != 2 {
		t.Fatalf("status after install: %+v", r)
	}
	audit := e.cfg
	audit.Mode = Audit
	if r := Status(audit); r.Problem == "" || !strings.Contains(r.Problem, "runs in enforce") {
		t.Errorf("configured audit, running enforce: %+v", r)
	}
	if err := Remove(e.cfg); err != nil {
		t.Fatal(err)
	}
	r := Status(e.cfg)
	if r.Attached || !strings.Contains(r.Problem, "NOT checked") {
		t.Errorf("status after remove: %+v", r)
	}
	// Removed: queries pass again (off is off).
	e.dig(bob, "www.example.lab")
	if _, err := os.Stat(filepath.Join(policyDir(e.cfg.PinRoot, e.cfg.Table, 0), pinLink)); err == nil {
		t.Error("pin left")
	}
}

func TestEnforceIPv6(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	for _, proto := range []string{"+notcp", "+tcp"} {
		if got := e.dig(alice, "www.example.lab", proto, "@"+lab.ServerIP6); got != "10.77.0.80" {
			t.Fatalf("learned name over IPv6 %s: got %q", proto, got)
		}
		e.stoppedDig(alice, "q2fmzxr0.tunnel.evil", proto, "@"+lab.ServerIP6)
	}
	d := e.denied(alice, "q2fmzxr0.tunnel.evil", true)
	if d.Server.String() != lab.ServerIP6 {
		t.Errorf("denial: %+v", d)
	}
}

// server is dig's server argument: the IPv4 server unless args name one.
func server(args []string) string {
	for _, a := range args {
		if strings.HasPrefix(a, "@") {
			return a
		}
	}
	return "@" + lab.ServerIP4
}
