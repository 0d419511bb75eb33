package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/store"
)

// reconcileLab is a client namespace and cgroup where a learner runs
// beside the enforcing table, and a server with HTTP on 8080 and 8081.
type reconcileLab struct {
	db     string
	env    []string
	cg     *lab.Cgroup
	nobody lab.As
}

func newReconcileLab(t *testing.T) *reconcileLab {
	lab.Require(t, "nft", "curl")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	db := filepath.Join(t.TempDir(), "baseline.db")
	return &reconcileLab{db: db, cg: cg, nobody: lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg},
		env: []string{"EGRESS_DB=" + db, "EGRESS_NETNS=" + pair.Client.Name, "EGRESS_RESOLV_CONF=/etc/netns/" + pair.Client.Name + "/resolv.conf"}}
}

func url(port int) string { return fmt.Sprintf("http://%s:%d/", lab.ServerIP4, port) }

// report classifies the flows at the real time, with the 30-day stale
// period, unless args say otherwise.
func (l *reconcileLab) report(t *testing.T, args ...string) map[string]learn.ReportFlow {
	var rows []learn.ReportFlow
	out := mustRun(t, learnBin, l.env, append([]string{"report", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	m := map[string]learn.ReportFlow{}
	for _, r := range rows {
		m[fmt.Sprintf("%d %s %d", r.UID, r.Proto, r.Port)] = r
	}
	return m
}

func (l *reconcileLab) proposal(t *testing.T, args ...string) baseline.Proposal {
	var p baseline.Proposal
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, l.env, append([]string{"reconcile", "--json"}, args...)...)), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// startLearner runs the learner on the cgroup for the rest of the test.
func (l *reconcileLab) startLearner(t *testing.T) {
	startLearner(t, l.env, "--cgroup", l.cg.Path, "--flush-interval", "200ms")
}

// TestReconcileEndToEnd: learn, enforce, a client starts using a new
// destination and is denied, the learner records it as a candidate,
// reconcile proposes it, apply, the client now succeeds; a destination no
// longer used goes stale, is proposed for removal and removed.
func TestReconcileEndToEnd(t *testing.T) {
	l := newReconcileLab(t)
	// The learner runs all along, beside the enforcing table.
	l.startLearner(t)
	if err := reach(l.nobody, url(8080)); err != nil {
		t.Fatalf("learning blocked a connection: %v", err)
	}
	// With its hits: the name the connection presented can reach the
	// store a flush before the connection's count (a flow of 0 hits,
	// which apply skips: --min-hits 1).
	lab.Await(t, "the learner to record 8080", func() bool { return l.report(t)["65534 tcp 8080"].Hits > 0 })
	mustRun(t, enforceBin, l.env, "apply", "--mode", "enforce")
	if r := l.report(t)["65534 tcp 8080"]; r.State != store.StateApproved || r.Approved != 1 {
		t.Errorf("after apply the learned flow is %+v", r)
	}
	l.addNewDestination(t)
	l.removeStaleDestination(t)
	gens, cur := (&rolloutLab{env: l.env, db: l.db}).history(t)
	if cur != 3 || !strings.Contains(gens[2].Reason, "0 added, 1 removed") {
		t.Errorf("history: %d %+v", cur, gens)
	}
}

// addNewDestination: a new destination is denied, recorded as a
// candidate (not approved), proposed, and reached once applied.
func (l *reconcileLab) addNewDestination(t *testing.T) {
	if err := blocked(t, l.nobody, url(8081)); err != nil {
		t.Fatalf("an unlearned destination: %v", err)
	}
	lab.Await(t, "the learner to record 8081 as a candidate", func() bool {
		r, ok := l.report(t)["65534 tcp 8081"]
		return ok && r.State == store.StateCandidate
	})
	var generated plan.Plan
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, l.env, "generate", "--json", "--mode", "enforce")), &generated); err != nil {
		t.Fatal(err)
	}
	if generated.Flows != 1 {
		t.Errorf("generate took the candidate into the baseline: %d flows", generated.Flows)
	}
	p := l.proposal(t)
	if len(p.Additions) != 1 || p.Additions[0].Port != 8081 || p.Additions[0].Source != "candidate" || p.Against != 1 {
		t.Fatalf("proposal: %+v", p)
	}
	human := mustRun(t, enforceBin, l.env, "reconcile")
	if !strings.Contains(human, "+ tcp 10.77.0.1:8081") || !strings.Contains(human, "user nobody (uid 65534)") {
		t.Errorf("reconcile text:\n%s", human)
	}
	nft := filepath.Join(t.TempDir(), "next.nft")
	mustRun(t, enforceBin, l.env, "reconcile", "-o", nft)
	text, _ := os.ReadFile(nft)
	if !strings.Contains(string(text), "65534 . 10.77.0.1 . tcp . 8081") || !strings.Contains(string(text), "65534 . 10.77.0.1 . tcp . 8080") {
		t.Errorf("next generation's text:\n%s", text)
	}
	lab.MustRun(t, "ip", "netns", "exec", lab.NewNetns(t).Name, "nft", "-c", "-f", nft)

	out := mustRun(t, enforceBin, l.env, "reconcile", "--apply", "--mode", "enforce")
	if !strings.Contains(out, "applied generation 2") {
		t.Fatalf("reconcile --apply: %s", out)
	}
	if err := reach(l.nobody, url(8081)); err != nil {
		t.Errorf("the reconciled destination is still blocked: %v", err)
	}
	if r := l.report(t)["65534 tcp 8081"]; r.State != store.StateApproved || r.Approved != 2 {
		t.Errorf("after reconcile the new flow is %+v", r)
	}
	if p := l.proposal(t); len(p.Additions) != 0 {
		t.Errorf("a second proposal still adds %+v", p.Additions)
	}
}

// removeStaleDestination: 8080 is no longer used; 8081 keeps being used:
// only 8080 is proposed for removal, and removed. The clock (--now) is
// fixed, and the stale period lies halfway between the ages of the two
// flows at that time, so that no step has to happen within some time:
// 8080 is older than the period and 8081 younger, each by half the gap
// between their last uses.
func (l *reconcileLab) removeStaleDestination(t *testing.T) {
	seen80, seen81 := lastSeen(t, l.db, 8080), lastSeen(t, l.db, 8081)
	if err := reach(l.nobody, url(8081)); err != nil {
		t.Fatal(err)
	}
	lab.Await(t, "the learner to record the new use of 8081", func() bool { return lastSeen(t, l.db, 8081).After(seen81) })
	seen81 = lastSeen(t, l.db, 8081)
	if seen81.Sub(seen80) < 2*time.Millisecond {
		t.Fatalf("8080 last seen at %v, 8081 at %v: no gap to put a stale period in", seen80, seen81)
	}
	now := time.Now()
	staleAfter := ((now.Sub(seen80) + now.Sub(seen81)) / 2).Truncate(time.Millisecond)
	stale := []string{"--stale-after", staleAfter.String(), "--now", now.Format(time.RFC3339Nano)}
	if r := l.report(t, stale...); r["65534 tcp 8080"].State != store.StateStale || r["65534 tcp 8081"].State != store.StateApproved {
		t.Errorf("with %v: 8080 is %+v, 8081 is %+v", stale, r["65534 tcp 8080"], r["65534 tcp 8081"])
	}
	p := l.proposal(t, stale...)
	if len(p.Removals) != 1 || p.Removals[0].Port != 8080 {
		t.Fatalf("removals: %+v", p.Removals)
	}
	mustRun(t, enforceBin, l.env, append([]string{"reconcile", "--apply", "--only", "remove", "--mode", "enforce"}, stale...)...)
	if r := l.report(t)["65534 tcp 8080"]; r.State != store.StateRetired {
		t.Errorf("the removed flow is %+v", r)
	}
	if err := blocked(t, l.nobody, url(8080)); err != nil {
		t.Errorf("the removed destination: %v", err)
	}
	if err := reach(l.nobody, url(8081)); err != nil {
		t.Errorf("the used destination was removed: %v", err)
	}
	// Tried again after its removal, it is a candidate once more.
	lab.Await(t, "the learner to record 8080 as a candidate again", func() bool {
		return l.report(t)["65534 tcp 8080"].State == store.StateCandidate
	})
}

// TestFleetMerge: two hosts' exports make one role table that keeps which
// hosts saw each flow.
func TestFleetMerge(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	var files []string
	for i, host := range []string{"web-1", "web-2"} {
		db := filepath.Join(dir, host+".db")
		st, err := store.Create(db, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		flows := []store.Flow{
			{FlowKey: key(33, "192.0.2.10", 443), Hits: uint64(10 + i), FirstSeen: now, LastSeen: now, Hostnames: []string{"api.example"}},
			{FlowKey: key(33, fmt.Sprintf("192.0.2.%d", 20+i), 443), Hits: 1, FirstSeen: now, LastSeen: now},
		}
		if err := st.Apply(&store.Batch{Flows: flows}); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, host+".json")
		mustRun(t, learnBin, nil, "export", "--db", db, "--host", host, "-o", file)
		files = append(files, file)
	}
	var generated plan.Plan
	out := mustRun(t, enforceBin, nil, "generate", "--json", "--db", filepath.Join(dir, "none.db"), "--from", files[0], "--from", files[1])
	if err := json.Unmarshal([]byte(out), &generated); err != nil {
		t.Fatal(err)
	}
	hosts := map[string][]string{}
	for _, e := range generated.Sets[0].Elements {
		hosts[e.IP.String()] = e.Hosts
	}
	if len(hosts) != 3 || len(hosts["192.0.2.10"]) != 2 || len(hosts["192.0.2.20"]) != 1 || hosts["192.0.2.21"][0] != "web-2" {
		t.Errorf("provenance: %v", hosts)
	}
	text := mustRun(t, enforceBin, nil, "generate", "--db", filepath.Join(dir, "none.db"), "--from", files[0], "--from", files[1])
	if !strings.Contains(text, `33 . 192.0.2.10 . tcp . 443 comment "hits 21, last `) || !strings.Contains(text, "hosts 2") ||
		!strings.Contains(text, "from 2 exports (hosts web-1, web-2)") {
		t.Errorf("merged text:\n%s", text)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"format":"something-else"}`), 0o600)
	mustFail(t, enforceBin, nil, []string{bad, "format"}, "generate", "--from", bad)
}

// TestReconcileNamesDeniedFlowsLikeTheLearner: the monitor saw the victim
// (65534) denied on an address another user (4242) resolved from a name
// it controls. The denied destination, added with --include-denied, must
// not carry that name (it would become a name rule of the victim's), only
// the names the learner would give the flow: the victim's own lookups, or
// a trusted resolver's.
func TestReconcileNamesDeniedFlowsLikeTheLearner(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	victim4, victim6 := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9")
	err = st.Apply(&store.Batch{DNS: []store.DNSObservation{
		{IP: victim4, Names: []string{"evil.example"}, TTL: 60, UID: 4242, Seen: now},
		{IP: victim6, Names: []string{"evil.example"}, TTL: 60, UID: 4242, Seen: now},
		{IP: victim6, Names: []string{"api.example"}, TTL: 60, UID: 4343, Seen: now},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var obs []store.Observation
	for _, ip := range []netip.Addr{victim4, victim6} {
		obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: ip, Port: 443},
			Hits: 3, FirstSeen: now, LastSeen: now})
	}
	obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 4242, Proto: 6, IP: victim4, Port: 443},
		Hits: 1, FirstSeen: now, LastSeen: now})
	if err := st.AddObservations(obs, nil); err != nil {
		t.Fatal(err)
	}
	env := []string{"EGRESS_DB=" + db, "EGRESS_DNS_RESOLVER_USERS=4343"}
	var p baseline.Proposal
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "reconcile", "--json", "--include-denied")), &p); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, a := range p.Denied {
		got[netip.AddrPortFrom(a.IP, a.Port).String()+" "+a.User] = a.Hostnames
	}
	for k, want := range map[string][]string{
		"192.0.2.9:443 nobody":     {},
		"[2001:db8::9]:443 nobody": {"api.example"},
		"192.0.2.9:443 4242":       {"evil.example"}, // its own lookup
	} {
		if names, ok := got[k]; !ok || !slices.Equal(names, want) {
			t.Errorf("denied %s: names %v (present %v), want %v; denied %+v", k, names, ok, want, p.Denied)
		}
	}
	nft := filepath.Join(dir, "next.nft")
	mustRun(t, enforceBin, env, "reconcile", "--include-denied", "-o", nft)
	text, err := os.ReadFile(nft)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if strings.Contains(line, "uid 65534") && strings.Contains(line, "evil.example") {
			t.Errorf("the next generation lets the victim follow the attacker's name: %q", line)
		}
	}
}

// lastSeen reads from the store when the learner last saw uid 65534 reach
// the server's port over TCP, at full precision (the report rounds to the
// second).
func lastSeen(t *testing.T, db string, port uint16) time.Time {
	t.Helper()
	for _, f := range plantest.StoredFlows(t, db) {
		if f.FlowKey == key(65534, lab.ServerIP4, port) {
			return f.LastSeen
		}
	}
	t.Fatalf("the store has no flow of uid 65534 to port %d", port)
	return time.Time{}
}

func key(uid uint32, ip string, port uint16) store.FlowKey {
	return store.FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port}
}
