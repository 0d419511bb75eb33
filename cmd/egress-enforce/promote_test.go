package main

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/promote"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// promotion is promote --json's output.
type promotion struct {
	promote.Report
	Applied *struct {
		Generation  uint64   `json:"generation"`
		State       string   `json:"state"`
		EnforceUIDs []uint32 `json:"enforce_uids"`
	} `json:"applied"`
}

func (p *promotion) principal(t *testing.T, uid uint32) promote.Principal {
	t.Helper()
	i := slices.IndexFunc(p.Principals, func(x promote.Principal) bool { return x.UID == uid })
	if i < 0 {
		t.Fatalf("no principal %d in %+v", uid, p.Principals)
	}
	return p.Principals[i]
}

func (l *rolloutLab) promote(t *testing.T, args ...string) promotion {
	t.Helper()
	var p promotion
	if err := json.Unmarshal([]byte(l.run(t, append([]string{"promote", "--json"}, args...)...)), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// readStore opens the lab's store for reading, waiting for a writer.
func (l *rolloutLab) readStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(l.db, store.Options{LockTimeout: lab.Patience})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// watchRun is the monitor's newest run record in the store (nil: none).
func (l *rolloutLab) watchRun(t *testing.T) *store.Watch {
	t.Helper()
	ws, err := l.readStore(t).Watches()
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) == 0 {
		return nil
	}
	return &ws[len(ws)-1]
}

// audited says whether the store holds an audit observation of uid to
// port.
func (l *rolloutLab) audited(t *testing.T, uid uint32, port uint16) bool {
	t.Helper()
	obs, err := l.readStore(t).Observations()
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(obs, func(o store.Observation) bool { return o.Kind == store.ObsAudit && o.UID == uid && o.Port == port })
}

// TestPromoteEndToEnd is issue 17's acceptance: two users in audit in a
// namespace, the monitor recording; uid 4242's connection to a
// destination it never used is audited, so it is not ready and its reason
// names the destination; nobody is quiet and promote --apply enforces it
// through the rollout path (a confirm window, a guard, confirm); after
// that, nobody's unlearned connection is dropped and uid 4242's still
// only audited. The quiet period is the watch's run: the clock is moved
// to its last flush (--now), nothing waits for time to pass.
func TestPromoteEndToEnd(t *testing.T) {
	l := newRolloutLab(t)
	noJobs := t.TempDir() // a host without scheduled jobs (coverage_root)
	if err := os.MkdirAll(noJobs+"/etc", 0o755); err != nil {
		t.Fatal(err)
	}
	l.env = append(l.env, "EGRESS_COVERAGE_ROOT="+noJobs, "EGRESS_FLUSH_INTERVAL=200ms")
	l.run(t, "apply", "--mode", "audit")

	// Without a record of the monitor, nobody is quiet.
	p := l.promote(t, "--quiet-for", "1h")
	if r := p.principal(t, 65534); r.Ready || len(r.Reasons) == 0 || r.Reasons[0].Kind != promote.ReasonNoMonitorData {
		t.Errorf("no monitor data, yet %+v", r)
	}

	start(t, l.env, enforceBin, "watch", "--quiet")
	lab.Await(t, "the watch's run in the store", func() bool { return l.watchRun(t) != nil })
	if !reaches(l.other, 8081) {
		t.Fatal("audit mode dropped uid 4242's connection")
	}
	if !reaches(l.nobody, 8080) {
		t.Fatal("nobody's learned flow failed")
	}
	lab.Await(t, "uid 4242's audited packet in the store", func() bool { return l.audited(t, 4242, 8081) })
	run := l.watchRun(t)
	clock := []string{"--now", run.End.Format(time.RFC3339Nano), "--quiet-for", run.End.Sub(run.Start).String()}

	p = l.promote(t, clock...)
	noisy, quiet := p.principal(t, 4242), p.principal(t, 65534)
	if noisy.Ready || len(noisy.Reasons) != 1 || noisy.Reasons[0].Kind != promote.ReasonAudited ||
		!strings.Contains(noisy.Reasons[0].Text, "tcp 10.77.0.1:8081") {
		t.Errorf("uid 4242: %+v", noisy)
	}
	if !quiet.Ready || !slices.Equal(p.Ready, []uint32{65534}) || !p.Monitor.Recorded {
		t.Errorf("nobody: %+v; ready %v; monitor %+v", quiet, p.Ready, p.Monitor)
	}
	text := l.run(t, append([]string{"promote"}, clock...)...)
	lab.WantAll(t, "promote", text, "is not ready:", "audited (enforced, it would have been dropped): tcp 10.77.0.1:8081", "--apply makes the table staged: enforced nobody")

	p = l.promote(t, append(clock, "--apply", "--confirm-within", "10m", "--rollback-if-denied-rate", "1000/s")...)
	if p.Applied == nil || p.Applied.State != store.GenPending || !slices.Equal(p.Applied.EnforceUIDs, []uint32{65534}) {
		t.Fatalf("promote --apply: %+v", p.Applied)
	}
	gens, _ := l.history(t)
	if g := gens[len(gens)-1]; !alive(g.GuardPID) || !strings.Contains(g.Reason, "promote: enforce nobody") || !strings.Contains(g.Command, "promote") {
		t.Errorf("generation %+v (guard alive: %v)", g, alive(g.GuardPID))
	}
	l.run(t, "confirm")
	checkPromoted(t, l, clock)
}

// checkPromoted: nobody is enforced, uid 4242 only audited, in the kernel
// and for promote.
func checkPromoted(t *testing.T, l *rolloutLab, clock []string) {
	t.Helper()
	st := l.status(t)
	if st.Mode != plan.ModeStaged || !slices.Equal(st.EnforceUIDs, []uint32{65534}) {
		t.Errorf("status after promote: %+v", st.Status)
	}
	if !reaches(l.nobody, 8080) {
		t.Error("nobody's learned flow is blocked")
	}
	if err := blocked(t, l.nobody, "http://"+lab.ServerIP4+":8081/"); err != nil {
		t.Errorf("nobody's unlearned destination: %v", err)
	}
	if !reaches(l.other, 8081) {
		t.Error("uid 4242 is enforced: its unlearned destination is dropped")
	}
	p := l.promote(t, clock...)
	if p.principal(t, 65534).State != promote.StateEnforced || p.principal(t, 4242).State != promote.StateAudited || p.Next != nil {
		t.Errorf("after promotion: %+v, next %+v", p.Principals, p.Next)
	}
	before, _ := l.history(t)
	if out := l.run(t, append([]string{"promote", "--apply"}, clock...)...); !strings.Contains(out, "nothing applied: no user is ready") {
		t.Errorf("promote --apply with nobody ready:\n%s", out)
	}
	if after, _ := l.history(t); len(after) != len(before) {
		t.Errorf("a generation without a promotion: %+v", after[len(after)-1])
	}
}

// TestPromoteFlags: flags that would do nothing are refused, before
// anything is read.
func TestPromoteFlags(t *testing.T) {
	db := t.TempDir() + "/none.db"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--confirm-within", "1m"}, "--confirm-within: only with --apply"},
		{[]string{"--force"}, "--force: only with --apply"},
		{[]string{"--apply", "--rollback-if-denied-rate", "5/s"}, "needs --confirm-within"},
		{[]string{"--apply", "--confirm-within", "1m", "--rollback-if-denied-rate", "fast"}, "not a rate"},
		{[]string{"--quiet-for", "0s"}, "--quiet-for"},
		{[]string{}, "does not exist"},
	} {
		mustFail(t, enforceBin, nil, []string{c.want}, append([]string{"promote", "--db", db}, c.args...)...)
	}
	out := mustRun(t, enforceBin, nil, "promote", "--help")
	lab.WantAll(t, "promote --help", out, "--quiet-for", "--apply", "--confirm-within", "--rollback-if-denied-rate", "no monitor", "Usage:")
}
