package plan_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
	"github.com/egresskit/egress/store"
)

// TestStagedServicesRunningLinear: every apply by service leaves the
// staged services that do not run out of the table (Running), and the
// configuration stages as many as it likes: each stopped one was looked
// for among those listed so far (20k stopped took 0.64 s, 60k six). The
// plan of n staged services costs about ten times that of n/10, and
// lists the stopped ones once each, sorted.
func TestStagedServicesRunningLinear(t *testing.T) {
	running := func(s string) bool { return strings.HasSuffix(s, "0.service") }
	build := func(n int) *plan.Plan {
		o := plan.Options{Mode: plan.ModeEnforce, Now: tp, Match: plan.MatchService}
		for i := range n {
			o.EnforceServices = append(o.EnforceServices, fmt.Sprintf("system.slice/x%d.service", i))
		}
		f := pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 5, tp)
		f.Cgroups = []string{"/system.slice/x1.service", "/system.slice/x10.service"}
		return plan.Build([]store.Flow{f}, o)
	}
	check := func(p *plan.Plan, n int) {
		q := p.Running(running)
		if len(q.Stopped) != n-n/10 || !slices.IsSorted(q.Stopped) || len(slices.Compact(slices.Clone(q.Stopped))) != len(q.Stopped) {
			t.Errorf("%d services stopped (sorted: %v), want %d once each", len(q.Stopped), slices.IsSorted(q.Stopped), n-n/10)
		}
		if staged := q.ServiceSets[0].Services; len(staged) != n/10 || !slices.IsSorted(staged) {
			t.Errorf("%d services staged (sorted: %v), want %d", len(staged), slices.IsSorted(staged), n/10)
		}
	}
	scaletest.Linear(t, "the running plan of staged services", 60_000, func(n int) func() {
		p := build(n)
		return func() { check(p, n) }
	})
	// x1.service's element is left out with the stopped staged services.
	if q := build(20).Running(running); strings.Join(q.Stopped, " ") != strings.Join([]string{
		"system.slice/x1.service", "system.slice/x11.service", "system.slice/x12.service", "system.slice/x13.service",
		"system.slice/x14.service", "system.slice/x15.service", "system.slice/x16.service", "system.slice/x17.service",
		"system.slice/x18.service", "system.slice/x19.service", "system.slice/x2.service", "system.slice/x3.service",
		"system.slice/x4.service", "system.slice/x5.service", "system.slice/x6.service", "system.slice/x7.service",
		"system.slice/x8.service", "system.slice/x9.service"}, " ") || len(q.Services()) != 1 {
		t.Fatalf("stopped %q, services %v", q.Stopped, q.Services())
	}
}
