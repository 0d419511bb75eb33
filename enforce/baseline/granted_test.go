package baseline

import (
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

const (
	paySvc    = "system.slice/pay.service"
	backupSvc = "system.slice/backup.service"
)

// approvedFrom is an approved flow of uid 0 to 192.0.2.1:443 seen from
// cgroups, and the plan of the generation that approved it when it was
// seen from pay.service only.
func approvedFrom(t *testing.T, match string, cgroups ...string) (store.Flow, *plan.Plan) {
	t.Helper()
	f := rflow(0, "192.0.2.1", 443, 5, tp, tp, 1)
	f.Cgroups = []string{"/" + paySvc}
	cur := plan.Build([]store.Flow{f}, plan.Options{Now: tp, Match: match})
	f.Cgroups = cgroups
	return f, cur
}

func servicesOf(p *plan.Plan) []string {
	var out []string
	for s := range p.Services() {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestReconcileProposesNewServices: with per-service rules, an approved
// destination the learner saw since from another service is proposed for
// that service (not let into the next table unreviewed); --only remove
// leaves it out of the next table; under match service the element
// holds no uid, so another user of the same service is nothing new.
func TestReconcileProposesNewServices(t *testing.T) {
	for _, match := range []string{plan.MatchUserService, plan.MatchService} {
		f, cur := approvedFrom(t, match, "/"+paySvc, "/"+backupSvc+"/sub")
		o := ReconcileOptions{Now: tp, Granted: GrantedBy(cur, match)}
		p := Reconcile([]store.Flow{f}, nil, nil, 1, o)
		if len(p.Additions) != 1 || p.Additions[0].Source != "new service" || !slices.Equal(p.Additions[0].Services, []string{backupSvc}) {
			t.Fatalf("match %s: additions %+v", match, p.Additions)
		}
		var b strings.Builder
		if err := p.Write(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "[new service]  service "+backupSvc) {
			t.Errorf("match %s: the proposal does not show the new service:\n%s", match, b.String())
		}
		next := plan.Build(p.Next(), plan.Options{Now: tp, Match: match})
		if got := servicesOf(next); !slices.Equal(got, []string{backupSvc, paySvc}) {
			t.Errorf("match %s: services of the next table %v", match, got)
		}

		o.Only = "remove"
		p = Reconcile([]store.Flow{f}, nil, nil, 1, o)
		next = plan.Build(p.Next(), plan.Options{Now: tp, Match: match})
		if len(p.Additions) != 0 || !slices.Equal(servicesOf(next), []string{paySvc}) || len(next.Sets[0].Elements) != 0 {
			t.Errorf("match %s, --only remove: additions %+v, services %v, per-user %v", match, p.Additions, servicesOf(next), next.Sets[0].Elements)
		}
	}
	// Match service: another user of pay.service is allowed already.
	f, cur := approvedFrom(t, plan.MatchService, "/"+paySvc)
	f.UID = 1000
	if p := Reconcile([]store.Flow{f}, nil, nil, 1, ReconcileOptions{Now: tp, Granted: GrantedBy(cur, plan.MatchService)}); len(p.Additions) != 0 {
		t.Errorf("match service, another user: %+v", p.Additions)
	}
}

// TestReconcileProposesOutsideServices: an approved destination of a
// service seen since from outside any service (the root cgroup) would be
// a per-user element, every process of the user: it is proposed as
// such, and left out with --only remove.
func TestReconcileProposesOutsideServices(t *testing.T) {
	f, cur := approvedFrom(t, plan.MatchUserService, "/"+paySvc, "/")
	o := ReconcileOptions{Now: tp, Granted: GrantedBy(cur, plan.MatchUserService)}
	p := Reconcile([]store.Flow{f}, nil, nil, 1, o)
	if len(p.Additions) != 1 || p.Additions[0].Source != "outside services" {
		t.Fatalf("additions %+v", p.Additions)
	}
	o.Only = "remove"
	p = Reconcile([]store.Flow{f}, nil, nil, 1, o)
	if next := plan.Build(p.Next(), plan.Options{Now: tp, Match: plan.MatchUserService}); len(next.Sets[0].Elements) != 0 || len(p.Additions) != 0 {
		t.Errorf("--only remove: per-user elements %+v, additions %+v", next.Sets[0].Elements, p.Additions)
	}
}

// TestGrantedNeedsAServiceGeneration: with per-user rules, or a current
// generation matched otherwise, there is nothing to compare: nothing is
// proposed and nothing is cut.
func TestGrantedNeedsAServiceGeneration(t *testing.T) {
	f, cur := approvedFrom(t, plan.MatchUser, "/"+paySvc, "/"+backupSvc)
	for _, g := range []Granted{GrantedBy(cur, plan.MatchUserService), GrantedBy(nil, plan.MatchService)} {
		if g != nil {
			t.Fatal("a granted set without a generation matched by service")
		}
	}
	_, svcPlan := approvedFrom(t, plan.MatchUserService)
	if GrantedBy(svcPlan, plan.MatchService) != nil {
		t.Error("a user,service generation compared with match service")
	}
	if p := Reconcile([]store.Flow{f}, nil, nil, 1, ReconcileOptions{Now: tp}); len(p.Additions) != 0 || len(p.Next()) != 1 || len(p.Next()[0].Cgroups) != 2 {
		t.Errorf("no granted set: additions %+v, next %+v", p.Additions, p.Next())
	}
}

// TestSelectGranted: apply and generate build from the approved flows cut
// to what the current generation allows; before any approval, every flow.
func TestSelectGranted(t *testing.T) {
	f, cur := approvedFrom(t, plan.MatchUserService, "/"+paySvc, "/"+backupSvc)
	cand := rflow(0, "192.0.2.2", 443, 5, tp, tp, 0)
	cand.Cgroups = []string{"/" + backupSvc}
	sel := SelectGranted([]store.Flow{f, cand}, GrantedBy(cur, plan.MatchUserService), 0)
	if len(sel) != 1 || !slices.Equal(sel[0].Cgroups, []string{"/" + paySvc}) {
		t.Errorf("selected %+v", sel)
	}
	f.Approved, f.ApprovedAt = 0, tp
	if sel := SelectGranted([]store.Flow{f, cand}, GrantedBy(cur, plan.MatchUserService), 0); len(sel) != 2 {
		t.Errorf("nothing approved yet: selected %+v", sel)
	}
}

// TestReconcileServiceDepth: service_depth cuts the services reconcile
// names as the table cuts them.
func TestReconcileServiceDepth(t *testing.T) {
	f := rflow(0, "192.0.2.1", 443, 5, tp, tp, 0)
	f.Cgroups = []string{"/kubepods/pod1/ctr"}
	p := Reconcile([]store.Flow{f}, nil, nil, 0, ReconcileOptions{Now: tp, ServiceDepth: 2})
	if len(p.Additions) != 1 || !slices.Equal(p.Additions[0].Services, []string{"kubepods/pod1"}) {
		t.Errorf("additions %+v", p.Additions)
	}
}
