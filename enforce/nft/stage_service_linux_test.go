//go:build linux

package nft_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

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
