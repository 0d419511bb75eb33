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
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	flows, err := st.Flows()
	if err != nil {
		t.Fatal(err)
	}
	return flows
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
