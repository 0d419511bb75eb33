//go:build linux

package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestNoGuardNoApply: a guard that does not start (or, in the CLI, exits
// or stays silent before it is guarding) fails the apply before the
// kernel is touched; the generation is recorded as failed, with why.
func TestNoGuardNoApply(t *testing.T) {
	r := newRig(t)
	kept := planOf(plan.ModeAudit, 443)
	r.apply(kept, Options{})
	_, _, err := Apply(r.k, planOf(plan.ModeEnforce, 443), Options{Store: r.st, Logger: quiet, ConfirmWithin: time.Hour,
		StartGuard: func(uint64) (int, error) { return 0, errors.New("the guard (pid 7) exited before it was guarding") }})
	if err == nil || !strings.Contains(err.Error(), "exited before it was guarding") || !strings.Contains(err.Error(), "nothing was applied") {
		t.Fatalf("apply without a guard: %v", err)
	}
	if !r.holds(kept) || r.k.Calls(nft.OpApply) != 1 {
		t.Errorf("the kernel was touched (%d applies):\n%s", r.k.Calls(nft.OpApply), r.k.Dump())
	}
	if g := r.gen(2); g.State != store.GenFailed || !strings.Contains(g.Note, "exited before it was guarding") {
		t.Errorf("the failed generation: %+v", g)
	}
}
