package plan_test

import (
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

func TestServiceOf(t *testing.T) {
	for _, c := range []struct {
		cgroup string
		depth  int
		want   string
	}{
		{"/system.slice/nginx.service", 0, "system.slice/nginx.service"},
		{"/system.slice/nginx.service/worker", 0, "system.slice/nginx.service"},
		{"/system.slice/docker-0123abcd.scope", 0, "system.slice/docker-0123abcd.scope"},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope", 0, "user.slice/user-1000.slice/user@1000.service"},
		{"/kubepods/burstable/pod1/c1", 0, ""},
		{"/kubepods/burstable/pod1/c1", 3, "kubepods/burstable/pod1"},
		{"/kubepods", 3, ""},
		{"/", 0, ""},
		{"/", 1, ""},
		{"", 0, ""},
		{"cgroup-id:1234", 0, ""},
		{"/system.slice/a\".service", 0, ""},
		{"/system.slice/a b.service", 0, ""},
		{"/system.slice/..", 2, ""},
	} {
		if got := plan.ServiceOf(c.cgroup, c.depth); got != c.want {
			t.Errorf("ServiceOf(%q, %d) = %q, want %q", c.cgroup, c.depth, got, c.want)
		}
	}
}

func TestParseMatch(t *testing.T) {
	for in, want := range map[string]string{"": "user", "user": "user", "service": "service", "user,service": "user,service",
		"service,user": "user,service", "User, Service": "user,service"} {
		if got, err := plan.ParseMatch(in); err != nil || got != want {
			t.Errorf("ParseMatch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"uid", "user,user", "service,group"} {
		if _, err := plan.ParseMatch(bad); err == nil {
			t.Errorf("ParseMatch(%q): no error", bad)
		}
	}
}

func withCgroups(f store.Flow, cgroups ...string) store.Flow {
	f.Cgroups = cgroups
	return f
}

// TestBuildByService: a service's flows go to the service sets, flows
// from the root or of no recorded cgroup stay per user, a flow seen in
// both is in both; under match service two users of one service share
// one element; match user keeps today's table.
func TestBuildByService(t *testing.T) {
	flows := []store.Flow{
		withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.1", 443, 3, plantest.T0), "/system.slice/backup.service"),
		withCgroups(plantest.Flow(33, plantest.TCP, "192.0.2.1", 443, 3, plantest.T0), "/system.slice/backup.service/x"),
		withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.9", 443, 3, plantest.T0), "/system.slice/pay.service", "/"),
		plantest.Flow(0, plantest.TCP, "2001:db8::1", 443, 3, plantest.T0),
	}
	o := plan.Options{Now: plantest.T0, Match: "service", CgroupRoot: "unified"}
	p := plan.Build(flows, o)
	if len(p.Sets) != 4 {
		t.Fatalf("%d sets", len(p.Sets))
	}
	keys := func(s plan.Set) (k []string) {
		for _, e := range s.Elements {
			k = append(k, e.Key())
		}
		return k
	}
	if got := strings.Join(keys(p.Sets[2]), "; "); got != `"system.slice/backup.service" . 192.0.2.1 . tcp . 443; "system.slice/pay.service" . 192.0.2.9 . tcp . 443` {
		t.Errorf("svc4: %s", got)
	}
	if got := strings.Join(append(keys(p.Sets[0]), keys(p.Sets[1])...), "; "); got != "0 . 192.0.2.9 . tcp . 443; 0 . 2001:db8::1 . tcp . 443" {
		t.Errorf("per user: %s", got)
	}
	text := p.String()
	for _, want := range []string{
		"type cgroupsv2 . ipv4_addr . inet_proto . inet_service",
		`"unified/system.slice/backup.service" . 192.0.2.1 . tcp . 443 comment`,
		"socket cgroupv2 level 2 . ip daddr . meta l4proto . th dport @svc4 counter accept",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("script lacks %q:\n%s", want, text)
		}
	}

	o.Match = "user,service"
	if got := keys(plan.Build(flows, o).Sets[2]); len(got) != 3 || got[1] != `"system.slice/backup.service" . 33 . 192.0.2.1 . tcp . 443` {
		t.Errorf("user,service svc4: %v", got)
	}
	o.Match = ""
	user := plan.Build(flows, o)
	if len(user.Sets) != 2 || user.Elements() != 4 || strings.Contains(user.String(), "cgroupv2") {
		t.Errorf("match user: %d sets, %d elements", len(user.Sets), user.Elements())
	}
}

// TestServiceTextRefusesHostilePaths: a plan read back from the store
// whose service path or cgroup root would end the nft string renders to
// an error, not to a script.
func TestServiceTextRefusesHostilePaths(t *testing.T) {
	p := plan.Build([]store.Flow{withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.1", 443, 3, plantest.T0), "/a.service")},
		plan.Options{Now: plantest.T0, Match: "service"})
	bad := *p
	bad.Sets = append([]plan.Set(nil), p.Sets...)
	bad.Sets[2].Elements = append([]plan.Element(nil), p.Sets[2].Elements...)
	bad.Sets[2].Elements[0].Service = "a.service\" }\nadd table inet injected {"
	if err := bad.Text(&strings.Builder{}); err == nil {
		t.Error("a hostile service path rendered")
	}
	bad = *p
	bad.CgroupRoot = "x\" . 1"
	if err := bad.Text(&strings.Builder{}); err == nil {
		t.Error("a hostile cgroup root rendered")
	}
	if err := p.Text(&strings.Builder{}); err != nil {
		t.Errorf("the plan itself: %v", err)
	}
}

// TestRunningLeavesStoppedServicesOut: a service that is not running has
// no elements, and the script's header says so.
func TestRunningLeavesStoppedServicesOut(t *testing.T) {
	p := plan.Build([]store.Flow{
		withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.1", 443, 3, plantest.T0), "/a.service"),
		withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.2", 443, 3, plantest.T0), "/b.service"),
	}, plan.Options{Now: plantest.T0, Match: "service"})
	r := p.Running(func(s string) bool { return s == "a.service" })
	if got := r.Services(); len(got) != 1 || got["a.service"] != 1 || len(r.Stopped) != 1 || r.Stopped[0] != "b.service" {
		t.Errorf("running: %v, stopped %v", got, r.Stopped)
	}
	if len(p.Services()) != 2 {
		t.Error("Running changed the plan it was given")
	}
	if !strings.Contains(r.String(), "# service b.service is not running") {
		t.Errorf("header:\n%s", r.String())
	}
}

// TestServiceFlowsFollowNoName: name rules are per user, so a flow only
// services made keeps its learned address (in the service set) and adds
// no name rule that would open the name to every process of its user; a
// flow seen outside a service too is followed for the user as before.
func TestServiceFlowsFollowNoName(t *testing.T) {
	flows := []store.Flow{
		withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.1", 443, 3, plantest.T0, "pay.example"), "/system.slice/pay.service"),
		withCgroups(plantest.Flow(0, plantest.TCP, "192.0.2.2", 443, 3, plantest.T0, "backup.example"), "/system.slice/backup.service", "/"),
	}
	for _, mode := range []string{plan.FollowName, plan.FollowBoth} {
		p := plan.Build(flows, plan.Options{Now: plantest.T0, Match: "service", Follow: &plan.FollowOptions{Mode: mode}})
		if p.Follow == nil || len(p.Follow.Rules) != 1 || p.Follow.Rules[0].Name != "backup.example" {
			t.Errorf("%s: name rules %+v", mode, p.Follow)
		}
		if got := p.Services(); got["system.slice/pay.service"] != 1 {
			t.Errorf("%s: services %v", mode, got)
		}
	}
}
