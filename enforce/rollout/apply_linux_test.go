//go:build linux

package rollout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestApplyRecordsEachGeneration: every apply is a generation with its
// plan, the kernel holds the last one, and the files beside the store name
// it and hold its plan.
func TestApplyRecordsEachGeneration(t *testing.T) {
	r := newRig(t)
	audit, enforce := planOf(plan.ModeAudit, 443), planOf(plan.ModeEnforce, 443, 8443)
	r.apply(audit, Options{Command: "apply --mode audit", Reason: "first"})
	g := r.apply(enforce, Options{Command: "apply --mode enforce"})
	if g.N != 2 || g.State != store.GenApplied || g.Mode != "enforce" || g.Elements != 2 {
		t.Errorf("generation %+v", g)
	}
	if !r.holds(enforce) || !strings.Contains(r.k.Dump(), "policy drop;") {
		t.Errorf("the kernel holds:\n%s", r.k.Dump())
	}
	gens, cur, err := History(r.st, r.k.Target(), plan.DefaultTable)
	if err != nil || len(gens) != 2 || cur != 2 || gens[0].Reason != "first" {
		t.Errorf("history %+v, current %d, %v", gens, cur, err)
	}
	dir := AppliedDir(r.db, "", plan.DefaultTable)
	s, err := ReadApplied(dir)
	if err != nil || s.Current.N != 2 || s.Kept.N != 2 {
		t.Fatalf("state.json %+v, %v", s, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "plan-2.nft")); err != nil {
		t.Error(err)
	}
}

// TestRejectedApplyKeepsTheTable: a batch the kernel refuses leaves the
// previous table, and its generation is failed, never current.
func TestRejectedApplyKeepsTheTable(t *testing.T) {
	r := newRig(t)
	first := planOf(plan.ModeAudit, 443)
	r.apply(first, Options{})
	r.k.Fail(nft.OpApply, rejected)
	g, res, err := Apply(r.k, planOf(plan.ModeEnforce, 22), Options{Store: r.st, Logger: quiet})
	if !errors.Is(err, nft.ErrRejected) || res != nil || g == nil || g.State != store.GenFailed || !strings.Contains(g.Note, "injected") {
		t.Fatalf("apply: %+v %v", g, err)
	}
	if !r.holds(first) {
		t.Errorf("the previous table is gone:\n%s", r.k.Dump())
	}
	if c, err := Current(r.st, r.k.Target(), plan.DefaultTable); err != nil || c.N != 1 {
		t.Errorf("current %+v %v", c, err)
	}
}

// TestReadBackFailureKeepsTheGeneration: a table the kernel took but that
// reads back wrong is applied, and its note says so.
func TestReadBackFailureKeepsTheGeneration(t *testing.T) {
	r := newRig(t)
	r.k.Fail(nft.OpApply, errors.New("verify: 2 rules, want 12"))
	g, res, err := Apply(r.k, planOf(plan.ModeAudit, 443), Options{Store: r.st, Logger: quiet})
	if err == nil || res == nil || g.State != store.GenApplied || !strings.Contains(g.Note, "read-back failed") {
		t.Errorf("apply: %+v %+v %v", g, res, err)
	}
}

// TestApplyWhilePending: an apply while a generation waits for its
// confirmation is refused and says the guard is gone; --force rolls the
// pending one back first, to the kept one before it.
func TestApplyWhilePending(t *testing.T) {
	r := newRig(t)
	kept := planOf(plan.ModeAudit, 443)
	r.apply(kept, Options{})
	p := r.pending(planOf(plan.ModeEnforce, 443))
	if p.State != store.GenPending || p.RollbackTo != 1 {
		t.Fatalf("pending generation %+v", p)
	}
	_, _, err := Apply(r.k, planOf(plan.ModeEnforce, 22), Options{Store: r.st, Logger: quiet})
	if !errors.Is(err, ErrPending) || !strings.Contains(err.Error(), "guard (pid 1) is gone") {
		t.Fatalf("apply while pending: %v", err)
	}
	next := planOf(plan.ModeEnforce, 22)
	g := r.apply(next, Options{Force: true})
	if st := r.gen(p.N).State; st != store.GenRolledBack {
		t.Errorf("the pending generation is %s", st)
	}
	if back := r.gen(p.N + 1); back.Restores != 1 {
		t.Errorf("the forced rollback put back %d, want 1", back.Restores)
	}
	if g.N != p.N+2 || !r.holds(next) {
		t.Errorf("generation %d; the kernel holds:\n%s", g.N, r.k.Dump())
	}
}

// TestConfirm: confirm keeps a pending generation, once; with nothing
// pending there is nothing to confirm.
func TestConfirm(t *testing.T) {
	r := newRig(t)
	if _, err := Confirm(r.st, r.k.Target(), plan.DefaultTable); !errors.Is(err, ErrNothingToConfirm) {
		t.Errorf("confirm with nothing applied: %v", err)
	}
	p := r.pending(planOf(plan.ModeEnforce, 443))
	g, err := Confirm(r.st, r.k.Target(), plan.DefaultTable)
	if err != nil || g.N != p.N || g.State != store.GenConfirmed {
		t.Fatalf("confirm: %+v %v", g, err)
	}
	if _, err := Confirm(r.st, r.k.Target(), plan.DefaultTable); !errors.Is(err, ErrNothingToConfirm) {
		t.Errorf("confirm twice: %v", err)
	}
	s, err := ReadApplied(AppliedDir(r.db, "", plan.DefaultTable))
	if err != nil || s.Kept.N != p.N {
		t.Errorf("the files beside the store keep %+v, %v", s.Kept, err)
	}
}

// TestAppliesWaitForEachOther: while another change holds the lock, an
// apply waits, then gives up naming the holder.
func TestAppliesWaitForEachOther(t *testing.T) {
	r := newRig(t)
	unlock, err := lockApplies(context.Background(), r.db, time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, _, err = Apply(r.k, planOf(plan.ModeAudit, 443), Options{Store: r.st, LockWait: 20 * time.Millisecond, Logger: quiet})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "by pid") {
		t.Errorf("apply under another's lock: %v", err)
	}
	if r.k.Calls(nft.OpApply) != 0 {
		t.Error("the kernel was changed without the lock")
	}
}
