package promote

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/coverage"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// The scene, at a moved clock: the table went in (audit) on November 10;
// the monitor recorded from November 9 on; the quiet period is the week
// before December 1, noon. alice is quiet; bob's packet to 10.0.0.9:8081
// was audited on November 30; carol reached a new destination on
// November 28; root has a weekly job the soak has not seen.
var (
	now     = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	long    = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	applied = time.Date(2026, 11, 10, 9, 0, 0, 0, time.UTC)
)

const (
	alice = 1000
	bob   = 1001
	carol = 1002
)

func names(uid uint32) string {
	return map[uint32]string{0: "root", alice: "alice", bob: "bob", carol: "carol"}[uid]
}

func key(uid uint32, ip string, port uint16) store.FlowKey {
	return store.FlowKey{UID: uid, Proto: plan.ProtoTCP, IP: netip.MustParseAddr(ip), Port: port}
}

func flow(uid uint32, ip string, port uint16, first time.Time, approved bool, names ...string) store.Flow {
	f := store.Flow{FlowKey: key(uid, ip, port), Hits: 4, FirstSeen: first, LastSeen: now.Add(-time.Hour), Hostnames: names}
	if approved {
		f.Approved, f.ApprovedAt = 1, applied
	}
	return f
}

// scene is the input of the scene above, in audit mode.
func scene() Input {
	flows := []store.Flow{
		flow(alice, "10.0.0.1", 443, long, true, "api.example.com"),
		flow(bob, "10.0.0.2", 443, long, true),
		flow(carol, "10.0.0.3", 443, long, true),
		flow(carol, "10.0.0.4", 8443, now.Add(-3*24*time.Hour), false, "new.example.com"),
	}
	p := plan.Build(flows[:3], plan.Options{Mode: plan.ModeAudit, DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")}, Now: applied})
	gen := store.Generation{N: 1, Time: applied, Table: p.Table, Mode: "audit", State: store.GenApplied}
	weekly := time.Date(2026, 12, 6, 0, 10, 0, 0, time.UTC)
	uid0, uidAlice := uint32(0), uint32(alice)
	return Input{
		Flows: flows,
		Observations: []store.Observation{
			{Kind: store.ObsAudit, FlowKey: key(bob, "10.0.0.9", 8081), Hits: 3, FirstSeen: now.Add(-26 * time.Hour), LastSeen: now.Add(-25 * time.Hour)},
			{Kind: store.ObsAudit, FlowKey: key(alice, "10.0.0.7", 80), Hits: 1, FirstSeen: long, LastSeen: long}, // long before
		},
		Denials:     map[int64]store.DenialCount{now.Add(-25*time.Hour).Unix() / 60: {Audit: 3}},
		Watches:     []store.Watch{{ID: 1, Start: applied.Add(-24 * time.Hour), End: now.Add(-10 * time.Second), Group: plan.DefaultNFLOGGroup, Counters: true}},
		Generations: []store.Generation{gen},
		Current:     &gen,
		Plan:        p,
		Names:       map[store.FlowKey][]string{key(bob, "10.0.0.9", 8081): {"metrics.example.net"}},
		Jobs: &coverage.Coverage{Jobs: []coverage.Job{
			{Name: "/etc/cron.weekly/man-db", Kind: "cron", User: "root", UID: &uid0, Counted: true, DueBy: &weekly},
			{Name: "/var/spool/cron/crontabs/alice:8", Kind: "cron", User: "alice", UID: &uidAlice, Counted: true, SeenDuringSoak: true},
		}},
	}
}

// emptyScan is a scan of a host without scheduled jobs.
var emptyScan = coverage.Coverage{Jobs: []coverage.Job{}}

func evaluate(t *testing.T, in Input) *Report {
	t.Helper()
	r, err := Evaluate(in, Options{Now: now, QuietFor: DefaultQuietFor, UserName: names})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func principal(t *testing.T, r *Report, uid uint32) Principal {
	t.Helper()
	i := slices.IndexFunc(r.Principals, func(p Principal) bool { return p.UID == uid })
	if i < 0 {
		t.Fatalf("no principal %d among %+v", uid, r.Principals)
	}
	return r.Principals[i]
}

// reasons are a principal's reason kinds, and its texts joined.
func reasons(p Principal) ([]string, string) {
	var kinds, texts []string
	for _, r := range p.Reasons {
		kinds = append(kinds, r.Kind)
		texts = append(texts, r.Text)
	}
	return kinds, strings.Join(texts, "\n")
}

// TestEvaluate: the quiet user is ready; the audited one is not, and its
// reason names the destination (and its name, and when it would be
// quiet); a new destination that is not in the table keeps its user out;
// a job the soak has not seen keeps its user out; --apply would stage
// the quiet one.
func TestEvaluate(t *testing.T) {
	r := evaluate(t, scene())
	if p := principal(t, r, alice); !p.Ready || len(p.Reasons) != 0 || p.State != StateAudited {
		t.Errorf("alice: %+v", p)
	}
	kinds, text := reasons(principal(t, r, bob))
	if !slices.Equal(kinds, []string{ReasonAudited}) || !strings.Contains(text, "tcp 10.0.0.9:8081 (metrics.example.net), 3 packet(s)") ||
		!strings.Contains(text, "quiet after "+timeText(now.Add(-25*time.Hour+DefaultQuietFor))) {
		t.Errorf("bob: %v\n%s", kinds, text)
	}
	kinds, text = reasons(principal(t, r, carol))
	if !slices.Equal(kinds, []string{ReasonNewDestination}) || !strings.Contains(text, "tcp 10.0.0.4:8443 (new.example.com)") ||
		!strings.Contains(text, "not in the table") {
		t.Errorf("carol: %v\n%s", kinds, text)
	}
	kinds, text = reasons(principal(t, r, 0))
	if !slices.Equal(kinds, []string{ReasonJobNotSeen}) || !strings.Contains(text, "/etc/cron.weekly/man-db (runs as root)") {
		t.Errorf("root: %v\n%s", kinds, text)
	}
	if !slices.Equal(r.Ready, []uint32{alice}) || r.Next == nil || r.Next.Mode != plan.ModeStaged || !slices.Equal(r.Next.EnforceUIDs, []uint32{alice}) {
		t.Errorf("ready %v, next %+v", r.Ready, r.Next)
	}
	if !r.Monitor.Recorded || r.Monitor.Runs != 1 || r.Jobs.Counted != 2 || r.Jobs.Unseen != 1 {
		t.Errorf("evidence: %+v %+v", r.Monitor, r.Jobs)
	}
}

// TestNoMonitorDataIsNoPass: with no record of the monitor, or a gap in
// it, nobody is quiet; a gap of a restart (under MaxGap) is no gap.
func TestNoMonitorDataIsNoPass(t *testing.T) {
	in := scene()
	in.Watches = nil
	r := evaluate(t, in)
	if kinds, text := reasons(principal(t, r, alice)); !slices.Equal(kinds, []string{ReasonNoMonitorData}) || !strings.Contains(text, "no monitor data") {
		t.Errorf("no watch: %v %s", kinds, text)
	}
	if r.Next != nil || r.Monitor.Recorded {
		t.Errorf("promoted without monitor data: %+v", r.Next)
	}
	w := scene().Watches[0]
	cut := now.Add(-2 * 24 * time.Hour)
	for _, c := range []struct {
		gap  time.Duration
		lack bool
	}{{time.Minute, false}, {MaxGap + time.Second, true}, {5 * time.Hour, true}} {
		in = scene()
		first, second := w, w
		first.End, second.Start = cut, cut.Add(c.gap)
		in.Watches = []store.Watch{first, second}
		r = evaluate(t, in)
		kinds, text := reasons(principal(t, r, alice))
		if lack := slices.Contains(kinds, ReasonNoMonitorData); lack != c.lack {
			t.Errorf("gap of %s: %v %s", c.gap, kinds, text)
		}
		if c.lack && !strings.Contains(text, "from "+timeText(cut)+" to "+timeText(cut.Add(c.gap))) {
			t.Errorf("gap of %s not named: %s", c.gap, text)
		}
	}
	// A run that stopped long ago; one of another namespace or group.
	for _, change := range []func(*store.Watch){
		func(w *store.Watch) { w.End = now.Add(-time.Hour) },
		func(w *store.Watch) { w.Target = "/run/netns/other" },
		func(w *store.Watch) { w.Group = 7 },
	} {
		in = scene()
		change(&in.Watches[0])
		if kinds, _ := reasons(principal(t, evaluate(t, in), alice)); !slices.Contains(kinds, ReasonNoMonitorData) {
			t.Errorf("%+v counted as a record: %v", in.Watches[0], kinds)
		}
	}
}

// TestNoTableIsNoPass: the monitor ran, but a table that logs went in
// only during the period (or was removed for part of it): nobody is
// quiet.
func TestNoTableIsNoPass(t *testing.T) {
	in := scene()
	late := now.Add(-2 * 24 * time.Hour)
	in.Generations[0].Time, in.Current.Time = late, late
	kinds, text := reasons(principal(t, evaluate(t, in), alice))
	if !slices.Equal(kinds, []string{ReasonNoTable}) || !strings.Contains(text, "to "+timeText(late)) {
		t.Errorf("late table: %v %s", kinds, text)
	}
	in = scene()
	removed := store.Generation{N: 2, Time: now.Add(-3 * 24 * time.Hour), Mode: "removed", State: store.GenApplied}
	failed := store.Generation{N: 3, Time: now.Add(-3*24*time.Hour + time.Hour), Mode: "audit", State: store.GenFailed}
	back := store.Generation{N: 4, Time: now.Add(-2 * 24 * time.Hour), Mode: "audit", State: store.GenApplied, Restores: 1}
	in.Generations, in.Current = append(in.Generations, removed, failed, back), &back
	r := evaluate(t, in)
	kinds, text = reasons(principal(t, r, alice))
	if !slices.Equal(kinds, []string{ReasonNoTable}) || !strings.Contains(text, "from "+timeText(removed.Time)+" to "+timeText(back.Time)) {
		t.Errorf("removed for a day: %v %s", kinds, text)
	}
	if !strings.Contains(strings.Join(r.Notes, " "), "puts back the table of generation 1") {
		t.Errorf("notes %v", r.Notes)
	}
}

// TestUnknownUsersAreNoPass: packets of the period the monitor could not
// attribute (its bounds, lost log messages, the audit log's rate limit,
// counters it could not read, per-minute counts without a destination)
// keep everyone in audit; losses of a record before the period do not.
func TestUnknownUsersAreNoPass(t *testing.T) {
	for name, change := range map[string]func(*Input){
		"unrecorded":   func(in *Input) { in.Watches[0].Unrecorded.Audit = 2 },
		"lost logs":    func(in *Input) { in.Watches[0].LostLogs = 1 },
		"unlogged":     func(in *Input) { in.Watches[0].UnloggedAudit = 9 },
		"no counters":  func(in *Input) { in.Watches[0].Counters = false },
		"unattributed": func(in *Input) { in.Observations = in.Observations[1:] },
	} {
		in := scene()
		change(&in)
		r := evaluate(t, in)
		if kinds, text := reasons(principal(t, r, alice)); !slices.Equal(kinds, []string{ReasonMonitorIncomplete}) {
			t.Errorf("%s: %v %s", name, kinds, text)
		}
	}
	in := scene()
	old := store.Watch{ID: 1, Start: long, End: applied.Add(-time.Hour), LostLogs: 40, UnloggedAudit: 9, Group: plan.DefaultNFLOGGroup}
	in.Watches[0].ID = 2
	in.Watches = append([]store.Watch{old}, in.Watches...)
	if p := principal(t, evaluate(t, in), alice); !p.Ready {
		t.Errorf("losses before the period: %+v", p)
	}
}

// TestCandidatesAndDrops: a candidate seen since the current generation
// is not in the table (even if first seen long ago), and a drop in the
// period counts like an audit; a flow of the table first seen in the
// period is still new.
func TestCandidatesAndDrops(t *testing.T) {
	in := scene()
	in.Flows = append(in.Flows, flow(alice, "10.0.0.8", 22, long, false))
	in.Observations = append(in.Observations, store.Observation{Kind: store.ObsDrop, FlowKey: key(bob, "10.0.0.10", 25), Hits: 1,
		FirstSeen: now.Add(-time.Hour), LastSeen: now.Add(-time.Hour)})
	in.Flows[2].FirstSeen = now.Add(-24 * time.Hour) // carol's approved flow, new
	r := evaluate(t, in)
	if kinds, text := reasons(principal(t, r, alice)); !slices.Equal(kinds, []string{ReasonNotInTable}) || !strings.Contains(text, "10.0.0.8:22 is not in the table") {
		t.Errorf("alice: %v %s", kinds, text)
	}
	if kinds, _ := reasons(principal(t, r, bob)); !slices.Equal(kinds, []string{ReasonAudited, ReasonDropped}) {
		t.Errorf("bob: %v", kinds)
	}
	kinds, text := reasons(principal(t, r, carol))
	if !slices.Equal(kinds, []string{ReasonNewDestination, ReasonNewDestination}) || strings.Count(text, "not in the table") != 1 {
		t.Errorf("carol: %v %s", kinds, text)
	}
}

// TestListsAreBounded: a user with many new destinations lists ten and
// counts the rest.
func TestListsAreBounded(t *testing.T) {
	in := scene()
	for i := range 25 {
		in.Flows = append(in.Flows, flow(bob, fmt.Sprintf("10.1.0.%d", i), 443, now.Add(-time.Duration(i+1)*time.Hour), false))
	}
	kinds, text := reasons(principal(t, evaluate(t, in), bob))
	if len(kinds) != 12 || !strings.Contains(text, "and 15 more (new destination)") || !strings.Contains(text, "10.1.0.0:443") {
		t.Errorf("%d reasons: %s", len(kinds), text)
	}
}

// TestJobsUnknownIsNoPass: a scan of the jobs that failed keeps everyone
// in audit; a job whose user the host does not name is a note.
func TestJobsUnknownIsNoPass(t *testing.T) {
	in := scene()
	in.Jobs, in.JobsErr = nil, errors.New("coverage_root: not a directory")
	if kinds, text := reasons(principal(t, evaluate(t, in), alice)); !slices.Equal(kinds, []string{ReasonJobsUnknown}) || !strings.Contains(text, "not a directory") {
		t.Errorf("%v %s", kinds, text)
	}
	in = scene()
	in.Jobs.Jobs = append(in.Jobs.Jobs, coverage.Job{Name: "pg_dump.timer", User: "postgres", Counted: true})
	if r := evaluate(t, in); !strings.Contains(strings.Join(r.Notes, " "), "pg_dump.timer") {
		t.Errorf("notes %v", r.Notes)
	}
}

// TestStagings: who --apply enforces, from each staging: audit grows an
// enforce set; an enforce set grows; an audit set shrinks, and empty it
// is enforce mode; enforce mode has nobody to promote.
func TestStagings(t *testing.T) {
	for _, c := range []struct {
		from, want Staging
		ready      []uint32
	}{
		{Staging{Mode: plan.ModeAudit}, Staging{Mode: plan.ModeStaged, EnforceUIDs: []uint32{alice}}, []uint32{alice}},
		{Staging{Mode: plan.ModeStaged, EnforceUIDs: []uint32{bob}}, Staging{Mode: plan.ModeStaged, EnforceUIDs: []uint32{alice, bob}}, []uint32{alice}},
		{Staging{Mode: plan.ModeStaged, AuditUIDs: []uint32{alice, bob}}, Staging{Mode: plan.ModeStaged, AuditUIDs: []uint32{bob}}, []uint32{alice}},
		{Staging{Mode: plan.ModeStaged, AuditUIDs: []uint32{alice}}, Staging{Mode: plan.ModeEnforce}, []uint32{alice}},
	} {
		if got := c.from.promote(c.ready); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%+v + %v = %+v, want %+v", c.from, c.ready, got, c.want)
		}
	}
	in := scene()
	in.Plan, _ = plan.Restage(in.Plan, plan.ModeEnforce, nil, []uint32{bob})
	r := evaluate(t, in)
	if principal(t, r, alice).State != StateEnforced || principal(t, r, carol).State != StateEnforced || principal(t, r, bob).State != StateAudited {
		t.Errorf("states %+v", r.Principals)
	}
	if r.Next != nil {
		t.Errorf("bob is not ready, yet next %+v", r.Next)
	}
	in.Plan, _ = plan.Restage(in.Plan, plan.ModeEnforce, nil, nil)
	if r := evaluate(t, in); r.Next != nil || len(r.Ready) != 0 {
		t.Errorf("enforce mode: %+v", r)
	}
}

// TestOutput: the text names each principal, the reasons of those not
// ready, and what --apply does; the JSON has the fields scripts read.
func TestOutput(t *testing.T) {
	r := evaluate(t, scene())
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, w := range []string{"quiet for 168h0m0s", "current: generation 1, audit mode: everyone audited", "monitor: 1 run record(s)",
		"bob (uid 1001) is not ready:\n  - audited", "10.0.0.9:8081", "ready: alice; --apply makes the table staged: enforced alice; audited everyone else"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "alice (uid 1000) is not ready") {
		t.Errorf("a ready user listed as not ready:\n%s", out)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	_ = json.Unmarshal(data, &back)
	for _, k := range []string{"now", "quiet_for", "since", "generation", "mode", "monitor", "jobs", "principals", "ready", "next", "notes"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, data)
		}
	}
}

// TestRefusals: no generation, a quiet period that is none.
func TestRefusals(t *testing.T) {
	in := scene()
	in.Current = nil
	if _, err := Evaluate(in, Options{Now: now, QuietFor: time.Hour}); err == nil || !strings.Contains(err.Error(), "apply --mode audit") {
		t.Errorf("no generation: %v", err)
	}
	if _, err := Evaluate(scene(), Options{Now: now}); err == nil || !strings.Contains(err.Error(), "--quiet-for") {
		t.Errorf("no quiet period: %v", err)
	}
}
