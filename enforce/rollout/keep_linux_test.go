//go:build linux

package rollout

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestPlansToKeepAfterPrune: with keep_generations 2, the plans the
// current generation (a rollback to generation 1) and a default rollback
// need survive a prune, a rollback works, and a rollback to a pruned plan
// says why it cannot.
func TestPlansToKeepAfterPrune(t *testing.T) {
	l := nfttest.NewLab(t)
	st, err := store.Create(t.TempDir()+"/baseline.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mode := plan.ModeAudit
		if i%2 == 1 {
			mode = plan.ModeEnforce
		}
		o := nfttest.Options(mode)
		if i%2 == 1 { // staged: no delta from the table before, each plan is stored whole
			o.EnforceUIDs = []uint32{1000}
		}
		if _, _, err := Apply(nft.Open(l.Target), plan.Build(nfttest.Baseline(), o), Options{Store: st, Command: "test " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Rollback(st, nft.Open(l.Target), plan.DefaultTable, RollbackOptions{To: 1, Command: "test", Reason: "back to 1"}); err != nil { // generation 6 restores 1
		t.Fatal(err)
	}
	res, err := st.Prune(store.PruneOptions{Now: time.Now(), KeepGenerations: 2, KeepPlans: PlansToKeep})
	if err != nil {
		t.Fatal(err)
	}
	if res.Plans != 3 {
		t.Errorf("pruned %d plans, want 3 (2, 3 and 4; 1 is current, 5 the rollback target)", res.Plans)
	}
	if _, err := Rollback(st, nft.Open(l.Target), plan.DefaultTable, RollbackOptions{To: 3, Command: "test", Reason: "to a pruned plan"}); err == nil || !strings.Contains(err.Error(), "pruned") {
		t.Errorf("rollback to a pruned plan: %v", err)
	}
	g, err := Rollback(st, nft.Open(l.Target), plan.DefaultTable, RollbackOptions{Command: "test", Reason: "the default rollback"})
	if err != nil || g.Restores != 5 {
		t.Fatalf("default rollback: %+v, %v", g, err)
	}
	if s, _ := nft.Open(l.Target).Status(plan.DefaultTable, false); s.Mode != plan.ModeAudit {
		t.Errorf("after the rollback to generation 5 the mode is %s", s.Mode)
	}
	// Generation 7 restores 5; 6 (restoring 1) is the rollback target.
	if _, err := st.Prune(store.PruneOptions{Now: time.Now(), KeepGenerations: 2, KeepPlans: PlansToKeep}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint64{1, 5} {
		if _, err := st.GenerationPlan(n); err != nil {
			t.Errorf("plan %d: %v", n, err)
		}
	}
}
