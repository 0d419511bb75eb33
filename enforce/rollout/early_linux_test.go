//go:build linux

package rollout

import (
	"errors"
	"os"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
)

// TestEarlyFilesFollowTheKernel: the patch and its files are made while
// the kernel works, before it says whether a delta went through. When it
// replaced the whole table instead (its table was not the base), the
// files hold the whole plan, not the patch made early; when it refused
// the table, no file of the generation is left, its index included.
func TestEarlyFilesFollowTheKernel(t *testing.T) {
	r := newRig(t)
	dir := AppliedDir(r.db, targetKey(r.k.Target()), plan.DefaultTable)
	r.apply(planOf(plan.ModeAudit, 443), Options{})
	r.k.Tamper(plan.DefaultTable, func(p *plan.Plan) { p.Sets[0].Elements = p.Sets[0].Elements[:0] })
	second := planOf(plan.ModeAudit, 443, 8443)
	g := r.apply(second, Options{})
	if g.PlanBase != 0 || r.k.Deltas() != 0 {
		t.Fatalf("generation %d: a patch of %d after %d deltas, want a whole plan after a replace", g.N, g.PlanBase, r.k.Deltas())
	}
	data, err := os.ReadFile(planFile(dir, g.N, ".json"))
	if err != nil || plan.IsPatch(data) {
		t.Fatalf("plan-%d.json: %v; a patch: %v, want the whole plan", g.N, err, err == nil && plan.IsPatch(data))
	}
	if p, err := readAppliedPlan(dir, g.N); err != nil || p.String() != second.String() {
		t.Fatalf("plan-%d.json reads back as %v (%v), want\n%v", g.N, p, err, second)
	}
	if _, err := os.Stat(indexFile(dir, g.N)); err != nil {
		t.Errorf("no index of generation %d: %v", g.N, err)
	}

	// A delta, then one the kernel refuses.
	r.apply(planOf(plan.ModeAudit, 443, 8443, 9443), Options{})
	if r.k.Deltas() != 1 {
		t.Fatalf("%d deltas, want 1", r.k.Deltas())
	}
	r.k.Fail(nft.OpApply, rejected)
	failed, _, err := Apply(r.k, planOf(plan.ModeAudit, 443, 8443, 9443, 10443), Options{Store: r.st, Logger: quiet})
	if !errors.Is(err, nft.ErrRejected) {
		t.Fatalf("apply: %v, want rejected", err)
	}
	for _, f := range []string{planFile(dir, failed.N, ".nft"), indexFile(dir, failed.N)} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s of the refused generation %d is left", f, failed.N)
		}
	}
}
