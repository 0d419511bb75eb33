package plan_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

func stagedFlows() []store.Flow {
	a := plantest.Flow(65534, plan.ProtoTCP, "192.0.2.1", 443, 1, plantest.T0)
	a.Cgroups = []string{"/system.slice/a.service"}
	b := plantest.Flow(65534, plan.ProtoTCP, "192.0.2.2", 443, 1, plantest.T0)
	b.Cgroups = []string{"/system.slice/b.service"}
	return []store.Flow{a, b}
}

// TestServiceStagingRefused: the staging flags that make no sense
// together, without enforce mode, or without per-service rules, and a
// path nft could not be given, are errors that say so.
func TestServiceStagingRefused(t *testing.T) {
	for _, c := range []struct {
		o    plan.Options
		want string
	}{
		{plan.Options{Mode: plan.ModeEnforce, Match: "service", EnforceServices: []string{"s/a.service"}, AuditServices: []string{"s/b.service"}}, "exclude each other"},
		{plan.Options{Mode: plan.ModeEnforce, Match: "service", EnforceServices: []string{"s/a.service"}, EnforceUIDs: []uint32{1}}, "by user or by service"},
		{plan.Options{Mode: plan.ModeAudit, Match: "service", AuditServices: []string{"s/a.service"}}, "--mode enforce"},
		{plan.Options{Mode: plan.ModeEnforce, Match: "user", EnforceServices: []string{"s/a.service"}}, "match service or user,service"},
		{plan.Options{Mode: plan.ModeEnforce, Match: "service", EnforceServices: []string{`s/a" } table x {`}}, "not a service path"},
	} {
		if err := c.o.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o, err, c.want)
		}
	}
}

func TestParseService(t *testing.T) {
	for in, want := range map[string]string{
		"nginx.service":                      "system.slice/nginx.service",
		"/system.slice/nginx.service":        "system.slice/nginx.service",
		"user.slice/user-1000.slice/x.scope": "user.slice/user-1000.slice/x.scope",
		"kubepods/pod1":                      "kubepods/pod1",
	} {
		if got, err := plan.ParseService(in); err != nil || got != want {
			t.Errorf("ParseService(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a/../b", `a"b.service`, "a b.service"} {
		if _, err := plan.ParseService(bad); err == nil {
			t.Errorf("ParseService(%q): no error", bad)
		}
	}
}

// TestServiceStagingPlan: --enforce-services drops for the staged
// service's cgroup and audits everything else; --audit-services the
// reverse (policy drop); a staged service that does not run is left out
// of the set (it has no id) but stays in the plan's record, and the
// script says it is not running; Restage to users replaces the staging.
func TestServiceStagingPlan(t *testing.T) {
	o := plan.Options{Mode: plan.ModeEnforce, Match: plan.MatchService, CgroupRoot: "unified",
		EnforceServices: []string{"system.slice/b.service", "system.slice/a.service", "system.slice/a.service"}}
	p := plan.Build(stagedFlows(), o)
	if p.Mode != plan.ModeStaged || p.Chain.Policy != "accept" || !slices.Equal(p.EnforceServices, []string{"system.slice/a.service", "system.slice/b.service"}) {
		t.Fatalf("mode %s policy %s enforced %v", p.Mode, p.Chain.Policy, p.EnforceServices)
	}
	text := p.String()
	for _, want := range []string{
		"set enforce_services {\n\t\ttype cgroupsv2\n\t\telements = { \"unified/system.slice/a.service\", \"unified/system.slice/b.service\" }",
		"socket cgroupv2 level 2 @enforce_services counter limit rate 100/second counter log prefix \"NFT-EGRESS-DROP \"",
		"socket cgroupv2 level 2 @enforce_services drop comment",
		"counter limit rate 10/second counter log prefix \"NFT-EGRESS-AUDIT \" group 100 comment \"default audit: everything else\"",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("script lacks %q:\n%s", want, text)
		}
	}
	run := p.Running(func(s string) bool { return s == "system.slice/a.service" })
	if !slices.Equal(run.ServiceSets[0].Services, []string{"system.slice/a.service"}) || !slices.Contains(run.Stopped, "system.slice/b.service") ||
		len(run.EnforceServices) != 2 || len(p.ServiceSets[0].Services) != 2 {
		t.Errorf("running: sets %+v stopped %v enforced %v (plan's set %v)", run.ServiceSets, run.Stopped, run.EnforceServices, p.ServiceSets)
	}
	if !strings.Contains(run.String(), "# service system.slice/b.service is not running") {
		t.Errorf("running script:\n%s", run.String())
	}

	o.EnforceServices, o.AuditServices = nil, []string{"system.slice/b.service"}
	q := plan.Build(stagedFlows(), o)
	if q.Chain.Policy != "drop" || !strings.Contains(q.String(), "socket cgroupv2 level 2 @audit_services accept comment") || !q.Drops() {
		t.Errorf("audit-services:\n%s", q.String())
	}
	if err := plan.Guard(plan.Build(nil, o), nil); !errors.Is(err, plan.ErrUnsafe) {
		t.Errorf("guard on an empty baseline staged by service: %v", err)
	}
	r, err := plan.Restage(q, plan.ModeEnforce, []uint32{65534}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.AuditServices != nil || r.ServiceSets != nil || strings.Contains(r.String(), "audit_services") {
		t.Errorf("restaged to users keeps the service staging:\n%s", r.String())
	}
}
