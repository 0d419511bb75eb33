//go:build linux

package nft_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/store"
)

var (
	url8080 = "http://" + lab.ServerIP4 + ":8080/"
	url8081 = "http://" + lab.ServerIP4 + ":8081/"
)

// learnServices runs the real learner on parent while each client fetches
// its URL, and returns the flows it recorded.
func learnServices(t *testing.T, parent *lab.Cgroup, fetch map[string]lab.As) []store.Flow {
	t.Helper()
	db := filepath.Join(t.TempDir(), "baseline.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := learn.Run(ctx, learn.Config{DB: db, Cgroup: parent.Path, Flush: 200 * time.Millisecond, Drain: 100 * time.Millisecond,
			Probe: learn.DefaultProbeOptions(), Ready: func() { close(ready) }})
		done <- err
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("learner stopped before it was ready: %v", err)
	}
	for url, as := range fetch {
		if err := nfttest.Curl(as, url); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return plantest.StoredFlows(t, db)
}

func serviceOptions(t *testing.T, match string) plan.Options {
	t.Helper()
	cg, err := nft.HostCgroups()
	if err != nil {
		t.Fatal(err)
	}
	root, err := cg.Root()
	if err != nil {
		t.Fatal(err)
	}
	o := nfttest.Options(plan.ModeEnforce)
	o.Match, o.CgroupRoot = match, root
	return o
}

// TestServicesReachOnlyWhatTheyLearned: two services (a unit and a
// container scope) run as the same user; each learned its own
// destination. With match user,service each reaches only its own, the
// other's is dropped and counted, and so is everything of a service the
// baseline lacks. With match user (the control), the same baseline lets
// each reach both.
func TestServicesReachOnlyWhatTheyLearned(t *testing.T) {
	l := nfttest.NewLab(t)
	parent := lab.NewCgroup(t)
	a, b, c := parent.Child(t, "a.service"), parent.Child(t, "b.scope"), parent.Child(t, "c.service")
	as := func(cg *lab.Cgroup) lab.As { x := l.Nobody; x.Cgroup = cg; return x }
	flows := learnServices(t, parent, map[string]lab.As{url8080: as(a), url8081: as(b)})

	for _, f := range flows {
		t.Logf("learned uid %d %s:%d from %v", f.UID, f.IP, f.Port, f.Cgroups)
	}
	control := plan.Build(flows, serviceOptions(t, plan.MatchUser))
	if _, err := nft.Open(l.Target).Apply(control); err != nil {
		t.Fatal(err)
	}
	if err := nfttest.Curl(as(a), url8081); err != nil {
		t.Fatalf("control, match user: a.service cannot reach b's destination: %v", err)
	}

	p := plan.Build(flows, serviceOptions(t, plan.MatchUserService))
	if got := p.Services(); got[a.Rel(t)] != 1 || got[b.Rel(t)] != 1 || len(got) != 2 {
		t.Fatalf("services of the plan: %v", got)
	}
	if _, err := nft.Open(l.Target).Apply(p); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []struct {
		as  lab.As
		url string
	}{{as(a), url8080}, {as(b), url8081}} {
		if err := nfttest.Curl(ok.as, ok.url); err != nil {
			t.Errorf("%s cannot reach what it learned: %v", ok.as.Cgroup.Rel(t), err)
		}
	}
	for _, no := range []struct {
		as  lab.As
		url string
	}{{as(a), url8081}, {as(b), url8080}, {as(c), url8080}} {
		if err := l.BlockedTCP(t, no.as, no.url); err != nil {
			t.Errorf("%s to %s: %v", no.as.Cgroup.Rel(t), no.url, err)
		}
	}
}

// TestRestartedServiceKeepsItsRules: a service's cgroup removed and
// created again (a systemd restart) has a new id. Without the keeper its
// elements hold the old id and it is dropped; with it running, the
// elements follow the new cgroup.
func TestRestartedServiceKeepsItsRules(t *testing.T) {
	l := nfttest.NewLab(t)
	parent := lab.NewCgroup(t)
	a := parent.Child(t, "a.service")
	nobody := l.Nobody
	nobody.Cgroup = a
	flow := plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8080, 1, plantest.T0)
	flow.Cgroups = []string{"/" + a.Rel(t)}
	p := plan.Build([]store.Flow{flow}, serviceOptions(t, plan.MatchService))
	k := nft.Open(l.Target)
	if _, err := k.Apply(p); err != nil {
		t.Fatal(err)
	}
	if err := nfttest.Curl(nobody, url8080); err != nil {
		t.Fatal(err)
	}
	a.Recreate(t)
	if err := l.BlockedTCP(t, nobody, url8080); err != nil {
		t.Fatalf("no keeper: the re-created service still got through (the test proves nothing): %v", err)
	}

	cg, _ := nft.HostCgroups()
	keeper := k.NewKeeper(p, cg)
	ctx, cancel := context.WithCancel(context.Background())
	changes, done := make(chan nft.ServiceChange, 16), make(chan error, 1)
	go func() { done <- keeper.Run(ctx, func(c nft.ServiceChange) { changes <- c }) }()
	t.Cleanup(func() { cancel(); <-done })
	// Run starts by putting the running services' current ids in.
	lab.Await(t, "the keeper's start", func() bool { return nfttest.Curl(nobody, url8080) == nil })

	for i := range 3 {
		a.Recreate(t)
		id, _ := cg.ID(a.Rel(t))
		// The removal may be seen on its own first (the service stopped).
		for seen := false; !seen; {
			select {
			case ch := <-changes:
				if ch.Service != a.Rel(t) || ch.Elements != 1 || (ch.To != id && ch.To != 0) {
					t.Fatalf("change %+v, want the new id %d", ch, id)
				}
				if seen = ch.To == id; seen {
					t.Logf("restart %d: elements on the new id %s after the cgroup appeared", i+1, ch.Took)
				}
			case err := <-done:
				done <- err // for the cleanup
				t.Fatalf("keeper stopped: %v", err)
			case <-time.After(lab.Patience):
				t.Fatal("no change seen")
			}
		}
		if err := nfttest.Curl(nobody, url8080); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
	}
	// Stopped: its elements go (nothing holds an id no cgroup has).
	_ = os.Remove(a.Path)
	select {
	case ch := <-changes:
		if ch.To != 0 {
			t.Fatalf("stop: change %+v", ch)
		}
	case <-time.After(lab.Patience):
		t.Fatal("no change seen for the stop")
	}
	st, err := k.Status(p.Table, true)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(st.Sets, func(s nft.SetStatus) bool { return s.Name == plan.SetService4 }); i < 0 || st.Sets[i].Elements != 0 {
		t.Errorf("service set after the stop: %+v", st.Sets)
	}
	if err := os.Mkdir(a.Path, 0o755); err != nil { // for the cleanup
		t.Fatal(err)
	}
}

// TestServiceTextAndNetlinkListTheSame: the script (nft resolving the
// cgroup paths, through nsenter since ip netns exec hides
// /sys/fs/cgroup) and netlink (the ids) give the same table, for both
// service matches, IPv4 and IPv6, a unit at level 2 and one at level 3,
// and a service that is not running (no elements in either); with
// staged enforcement by service both ways (a running service and one
// that is not in the staging set).
func TestServiceTextAndNetlinkListTheSame(t *testing.T) {
	lab.Require(t, "nft", "nsenter")
	parent := lab.NewCgroup(t)
	a := parent.Child(t, "a.service")
	nested := parent.Child(t, "x.slice").Child(t, "n.scope")
	flow := func(uid uint32, ip string, port uint16, cgroups ...string) store.Flow {
		f := plantest.Flow(uid, plan.ProtoTCP, ip, port, 3, plantest.T0, "web.lab")
		f.Cgroups = cgroups
		return f
	}
	flows := []store.Flow{
		flow(0, "192.0.2.1", 443, "/"+a.Rel(t)+"/sub"),
		flow(0, "2001:db8::1", 443, "/"+a.Rel(t)),
		flow(1000, "192.0.2.2", 80, "/"+nested.Rel(t), "/"), // and from the root: per user too
		flow(1000, "192.0.2.3", 80, "/"+parent.Rel(t)+"/gone.service"),
		flow(1000, "192.0.2.4", 80),
	}
	gone := parent.Rel(t) + "/gone.service"
	for _, c := range []struct {
		match          string
		enforce, audit []string
	}{
		{plan.MatchService, nil, nil},
		{plan.MatchUserService, nil, nil},
		{plan.MatchUserService, []string{a.Rel(t), nested.Rel(t), gone}, nil},
		{plan.MatchService, nil, []string{a.Rel(t), gone}},
	} {
		match := c.match
		t.Run(fmt.Sprintf("%s enforce %d audit %d", match, len(c.enforce), len(c.audit)), func(t *testing.T) {
			o := serviceOptions(t, match)
			o.EnforceServices, o.AuditServices = c.enforce, c.audit
			p := plan.Build(flows, o)
			cg, _ := nft.HostCgroups()
			running, _ := cg.Resolve(p)
			if !slices.Equal(running.Stopped, []string{gone}) {
				t.Errorf("stopped: %v", running.Stopped)
			}
			byText, byNetlink := lab.NewNetns(t), lab.NewNetns(t)
			file := filepath.Join(t.TempDir(), "egress.nft")
			if err := os.WriteFile(file, []byte(running.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			lab.LoadNsenter(t, byText, file)
			if _, err := nft.Open(nft.Target{Netns: byNetlink.Name}).Apply(p); err != nil {
				t.Fatal(err)
			}
			x, y := lab.ListTableNsenter(t, byText, "egress"), lab.ListTableNsenter(t, byNetlink, "egress")
			if x != y {
				t.Errorf("listings differ\n--- nft -f:\n%s\n--- netlink:\n%s", x, y)
			}
			wants := []string{a.Rel(t) + `" . `, nested.Rel(t) + `" . `, "socket cgroupv2 level 2 . ", "socket cgroupv2 level 3 . "}
			if c.enforce != nil {
				wants = append(wants, "set enforce_services", "socket cgroupv2 level 3 @enforce_services", "socket cgroupv2 level 2 @enforce_services")
			}
			if c.audit != nil {
				wants = append(wants, "set audit_services", "socket cgroupv2 level 2 @audit_services")
			}
			for _, want := range wants {
				if !strings.Contains(y, want) {
					t.Errorf("listing lacks %q:\n%s", want, y)
				}
			}
			// diff reads the ids back as paths: nothing to change.
			d, err := nft.Diff(nft.Open(nft.Target{Netns: byNetlink.Name}), running)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Empty() {
				t.Errorf("diff after apply: +%v -%v", d.Added, d.Removed)
			}
		})
	}
}

// TestServiceStartedAfterApply: a service not running when the table was
// applied has no elements; when its cgroup appears the keeper adds them
// (the set has room for them), and it reaches what it learned.
func TestServiceStartedAfterApply(t *testing.T) {
	l := nfttest.NewLab(t)
	parent := lab.NewCgroup(t)
	a := parent.Child(t, "a.service")
	later := filepath.Join(parent.Path, "later.service")
	flows := []store.Flow{
		plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8080, 1, plantest.T0),
		plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8081, 1, plantest.T0),
		plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP6, 8081, 1, plantest.T0),
	}
	flows[0].Cgroups = []string{"/" + a.Rel(t)}
	flows[1].Cgroups = []string{"/" + parent.Rel(t) + "/later.service"}
	flows[2].Cgroups = flows[1].Cgroups
	p := plan.Build(flows, serviceOptions(t, plan.MatchUserService))
	k := nft.Open(l.Target)
	if _, err := k.Apply(p); err != nil {
		t.Fatal(err)
	}
	cg, _ := nft.HostCgroups()
	keeper := k.NewKeeper(p, cg)
	if err := keeper.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	changes, done := make(chan nft.ServiceChange, 16), make(chan error, 1)
	go func() { done <- keeper.Run(ctx, func(c nft.ServiceChange) { changes <- c }) }()
	t.Cleanup(func() { cancel(); <-done })

	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(later) })
	select {
	case ch := <-changes:
		if ch.Service != parent.Rel(t)+"/later.service" || ch.From != 0 || ch.To == 0 || ch.Elements != 2 {
			t.Fatalf("change %+v", ch)
		}
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("keeper stopped: %v", err)
	case <-time.After(lab.Patience):
		t.Fatal("no change seen")
	}
	f, err := os.Open(later)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nobody := l.Nobody
	nobody.Cgroup = lab.CgroupOf(f)
	if err := nfttest.Curl(nobody, url8081); err != nil {
		t.Errorf("the service started after the apply: %v", err)
	}
}

// TestHostileCgroupNameStaysOutOfTheScript: a local user who may create
// cgroups (a delegated subtree) names one so that its path would end the
// nft string and add a table of its own. The learner records the path as
// it is; the flow stays per user, the script loads, and it creates
// nothing but our table.
func TestHostileCgroupNameStaysOutOfTheScript(t *testing.T) {
	l := nfttest.NewLab(t)
	parent := lab.NewCgroup(t)
	evil := parent.Child(t, `x" . 1 . 1.1.1.1 . tcp . 1 } } table inet injected { set s { type uid; elements = { 0 } } } table inet egress { set y { type uid; elements = { "0.service`)
	nobody := l.Nobody
	nobody.Cgroup = evil
	flows := learnServices(t, parent, map[string]lab.As{url8080: nobody})
	if len(flows) != 1 || len(flows[0].Cgroups) != 1 || !strings.Contains(flows[0].Cgroups[0], `x" . 1`) {
		t.Fatalf("learned %+v", flows)
	}
	p := plan.Build(flows, serviceOptions(t, plan.MatchService))
	if len(p.Services()) != 0 || len(p.Sets[0].Elements) != 1 {
		t.Errorf("the hostile cgroup made a service: %v, per-user elements %d", p.Services(), len(p.Sets[0].Elements))
	}
	file := filepath.Join(t.TempDir(), "egress.nft")
	if err := os.WriteFile(file, []byte(p.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := lab.NewNetns(t)
	lab.LoadNsenter(t, ns, file)
	if tables := strings.TrimSpace(lab.MustRun(t, "nsenter", "--net="+ns.Path(), "nft", "list", "tables")); tables != "table inet egress" {
		t.Errorf("tables after loading the script:\n%s", tables)
	}
}

// stagedLab is two services of one user (nobody), a.service and
// b.service, each of which learned the server's 8080; 8081 is learned by
// neither.
type stagedLab struct {
	l    *nfttest.Lab
	a, b *lab.Cgroup
	k    *nft.Netlink
}

func newStagedLab(t *testing.T) *stagedLab {
	l := nfttest.NewLab(t)
	parent := lab.NewCgroup(t)
	return &stagedLab{l: l, a: parent.Child(t, "a.service"), b: parent.Child(t, "b.service"), k: nft.Open(l.Target)}
}

func (s *stagedLab) as(cg *lab.Cgroup) lab.As { x := s.l.Nobody; x.Cgroup = cg; return x }

// plan is the table that stages the services: enforce lists the
// services enforced (others audited), audit those audited (others
// enforced).
func (s *stagedLab) plan(t *testing.T, enforce, audit []*lab.Cgroup) *plan.Plan {
	t.Helper()
	var flows []store.Flow
	for _, cg := range []*lab.Cgroup{s.a, s.b} {
		f := plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8080, 1, plantest.T0)
		f.Cgroups = []string{"/" + cg.Rel(t)}
		flows = append(flows, f)
	}
	o := serviceOptions(t, plan.MatchUserService)
	for _, cg := range enforce {
		o.EnforceServices = append(o.EnforceServices, cg.Rel(t))
	}
	for _, cg := range audit {
		o.AuditServices = append(o.AuditServices, cg.Rel(t))
	}
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	p := plan.Build(flows, o)
	if p.Mode != plan.ModeStaged {
		t.Fatalf("mode %s", p.Mode)
	}
	return p
}

func (s *stagedLab) apply(t *testing.T, p *plan.Plan) {
	t.Helper()
	if _, err := s.k.Apply(p); err != nil {
		t.Fatal(err)
	}
}

func (s *stagedLab) status(t *testing.T) *nft.Status {
	t.Helper()
	st, err := s.k.Status(plan.DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// dropped: cg's unlearned destination is dropped by the default rules.
func (s *stagedLab) dropped(t *testing.T, cg *lab.Cgroup, what string) {
	t.Helper()
	if err := s.l.BlockedTCP(t, s.as(cg), url8081); err != nil {
		t.Errorf("%s: %s to its unlearned destination: %v", what, cg.Rel(t), err)
	}
}

// audited: cg's unlearned destination passes, counted by the audit rule.
func (s *stagedLab) audited(t *testing.T, cg *lab.Cgroup, what string) {
	t.Helper()
	before := s.status(t).Audited.Packets
	if err := nfttest.Curl(s.as(cg), url8081); err != nil {
		t.Errorf("%s: %s to its unlearned destination was not let through: %v", what, cg.Rel(t), err)
	}
	if after := s.status(t).Audited.Packets; after <= before {
		t.Errorf("%s: %s to its unlearned destination passed, but the audit counter stayed at %d", what, cg.Rel(t), after)
	}
}

// reaches: cg reaches what it learned.
func (s *stagedLab) reaches(t *testing.T, cg *lab.Cgroup, what string) {
	t.Helper()
	if err := nfttest.Curl(s.as(cg), url8080); err != nil {
		t.Errorf("%s: %s cannot reach what it learned: %v", what, cg.Rel(t), err)
	}
}

// TestStagedServices: two services of one user. --enforce-services a:
// a's unlearned destination is dropped, b's only audited (logged, let
// through); status reads a as enforced. --audit-services b does the same
// the other way round.
func TestStagedServices(t *testing.T) {
	s := newStagedLab(t)
	for _, c := range []struct {
		name           string
		enforce, audit []*lab.Cgroup
	}{{"enforce-services a", []*lab.Cgroup{s.a}, nil}, {"audit-services b", nil, []*lab.Cgroup{s.b}}} {
		s.apply(t, s.plan(t, c.enforce, c.audit))
		s.reaches(t, s.a, c.name)
		s.reaches(t, s.b, c.name)
		s.dropped(t, s.a, c.name)
		s.audited(t, s.b, c.name)
		st := s.status(t)
		if st.Mode != plan.ModeStaged {
			t.Errorf("%s: status mode %s", c.name, st.Mode)
		}
		if c.enforce != nil && !slices.Equal(st.EnforceServices, []string{s.a.Rel(t)}) {
			t.Errorf("%s: status enforces %v", c.name, st.EnforceServices)
		}
		if c.audit != nil && !slices.Equal(st.AuditServices, []string{s.b.Rel(t)}) {
			t.Errorf("%s: status audits %v", c.name, st.AuditServices)
		}
	}
}

// TestStagedServiceRestarted: a staged service's cgroup created again (a
// restart) gets a new id. With the keeper running, the id in the staging
// set follows in the transaction of its elements: an enforced service
// stays enforced. Without it: a service kept in audit (--audit-services)
// falls to enforce, the safe side; an enforced one (--enforce-services)
// falls to audit: its traffic is let through, logged and counted as
// audited, and status shows the stale id (cgroup-id:N) instead of the
// service. That is why --audit-services is the safer way, and why the
// keeper must run.
func TestStagedServiceRestarted(t *testing.T) {
	s := newStagedLab(t)
	cg, _ := nft.HostCgroups()

	// Without a keeper, audit-services: the restarted b is enforced.
	s.apply(t, s.plan(t, nil, []*lab.Cgroup{s.b}))
	s.b.Recreate(t)
	s.dropped(t, s.b, "audit-services b, b restarted, no keeper")

	// Without a keeper, enforce-services: the restarted a is audited.
	p := s.plan(t, []*lab.Cgroup{s.a}, nil)
	s.apply(t, p)
	s.dropped(t, s.a, "enforce-services a, before the restart")
	s.a.Recreate(t)
	s.audited(t, s.a, "enforce-services a, a restarted, no keeper (documented: falls to audit)")
	if st := s.status(t); len(st.EnforceServices) != 1 || !strings.HasPrefix(st.EnforceServices[0], "cgroup-id:") {
		t.Errorf("status after the restart without a keeper: enforced %v, want the stale id", st.EnforceServices)
	}

	// With the keeper: its start puts a's new id in, and every restart
	// after it keeps a enforced.
	keeper := s.k.NewKeeper(p, cg)
	ctx, cancel := context.WithCancel(context.Background())
	changes, done := make(chan nft.ServiceChange, 16), make(chan error, 1)
	go func() { done <- keeper.Run(ctx, func(c nft.ServiceChange) { changes <- c }) }()
	t.Cleanup(func() { cancel(); <-done })
	lab.Await(t, "the keeper's start", func() bool {
		st := s.status(t)
		return slices.Equal(st.EnforceServices, []string{s.a.Rel(t)})
	})
	for i := range 2 {
		s.a.Recreate(t)
		id, _ := cg.ID(s.a.Rel(t))
		for seen := false; !seen; {
			select {
			case ch := <-changes:
				seen = ch.Service == s.a.Rel(t) && ch.To == id
			case err := <-done:
				done <- err
				t.Fatalf("keeper stopped: %v", err)
			case <-time.After(lab.Patience):
				t.Fatal("no change seen")
			}
		}
		what := "enforce-services a, restart with the keeper " + string(rune('1'+i))
		s.reaches(t, s.a, what)
		s.dropped(t, s.a, what)
		s.audited(t, s.b, what)
		if st := s.status(t); !slices.Equal(st.EnforceServices, []string{s.a.Rel(t)}) {
			t.Errorf("%s: status enforces %v", what, st.EnforceServices)
		}
	}
}
