//go:build linux

package rollout

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
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

// TestRollbackByDefaultAndTo: by default a rollback puts back the newest
// earlier kept generation with another table, recorded as a generation of
// its own; --to a generation that was never kept is refused; with nothing
// earlier the table is removed.
func TestRollbackByDefaultAndTo(t *testing.T) {
	r := newRig(t)
	one, two := planOf(plan.ModeAudit, 443), planOf(plan.ModeEnforce, 443, 22)
	r.apply(one, Options{})
	r.apply(two, Options{})
	r.k.Fail(nft.OpApply, rejected)
	if _, _, err := Apply(r.k, planOf(plan.ModeEnforce, 1), Options{Store: r.st, Logger: quiet}); err == nil {
		t.Fatal("the injected rejection did not fail the apply")
	}
	g, err := Rollback(r.st, r.k, plan.DefaultTable, RollbackOptions{Reason: "by hand", Logger: quiet})
	if err != nil || g.Restores != 1 || !r.holds(one) {
		t.Fatalf("rollback: %+v %v; kernel:\n%s", g, err, r.k.Dump())
	}
	if _, err := Rollback(r.st, r.k, plan.DefaultTable, RollbackOptions{To: 3, Logger: quiet}); err == nil || !strings.Contains(err.Error(), "applied and kept") {
		t.Errorf("rollback to a failed generation: %v", err)
	}
	if g, err = Rollback(r.st, r.k, plan.DefaultTable, RollbackOptions{To: 2, Logger: quiet}); err != nil || !r.holds(two) {
		t.Errorf("rollback --to 2: %+v %v", g, err)
	}

	lone := newRig(t)
	lone.apply(one, Options{})
	g, err = Rollback(lone.st, lone.k, plan.DefaultTable, RollbackOptions{Logger: quiet})
	if err != nil || g.Mode != ModeRemoved || lone.k.Dump() != "" {
		t.Errorf("rollback of the only generation: %+v %v", g, err)
	}
}

// TestRollbackRunsThePreApplyCheck: a kept table that would cut off DNS is
// not put back without force.
func TestRollbackRunsThePreApplyCheck(t *testing.T) {
	r := newRig(t)
	noDNS := plan.Build([]store.Flow{plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, plantest.T0)},
		plan.Options{Mode: plan.ModeEnforce, Now: plantest.T0})
	r.apply(noDNS, Options{})
	r.apply(planOf(plan.ModeAudit, 443), Options{})
	if _, err := Rollback(r.st, r.k, plan.DefaultTable, RollbackOptions{Logger: quiet}); !errors.Is(err, plan.ErrUnsafe) {
		t.Fatalf("rollback to a table without DNS: %v", err)
	}
	if _, err := Rollback(r.st, r.k, plan.DefaultTable, RollbackOptions{Force: true, Logger: quiet}); err != nil || !r.holds(noDNS) {
		t.Errorf("forced rollback: %v", err)
	}
}

// TestRemoveIsRecorded: remove deletes the table and records it, ending a
// pending generation; a second remove has nothing to record.
func TestRemoveIsRecorded(t *testing.T) {
	r := newRig(t)
	p := r.pending(planOf(plan.ModeEnforce, 443))
	removed, g, err := Remove(r.st, r.k, plan.DefaultTable, Options{Reason: "maintenance", Logger: quiet})
	if err != nil || !removed || g.Mode != ModeRemoved || r.k.Dump() != "" {
		t.Fatalf("remove: %v %+v %v", removed, g, err)
	}
	if st := r.gen(p.N).State; st != store.GenRolledBack {
		t.Errorf("the pending generation is %s", st)
	}
	if removed, g, err = Remove(r.st, r.k, plan.DefaultTable, Options{Logger: quiet}); err != nil || removed || g != nil {
		t.Errorf("second remove: %v %+v %v", removed, g, err)
	}
}

// guardOf runs the guard of generation n on the rig until it returns.
func (r *rig) guardOf(n uint64, k nft.Kernel, o GuardOptions) error {
	r.t.Helper()
	o.Logger = quiet
	if o.Poll == 0 {
		o.Poll = 5 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return GuardGeneration(ctx, r.db, k, n, o)
}

// TestGuardRollsBackWhenNotConfirmed: past its deadline the guard puts
// the kept generation back and records why; the kernel refusing it at
// first only delays it.
func TestGuardRollsBackWhenNotConfirmed(t *testing.T) {
	r := newRig(t)
	kept := planOf(plan.ModeAudit, 443)
	r.apply(kept, Options{})
	p := r.apply(planOf(plan.ModeEnforce, 443), Options{ConfirmWithin: time.Millisecond, StartGuard: func(uint64) (int, error) { return 1, nil }})
	r.k.Fail(nft.OpApply, errors.New("busy"), errors.New("busy"))
	if err := r.guardOf(p.N, r.k, GuardOptions{MaxBackoff: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if g := r.gen(p.N); g.State != store.GenRolledBack || !strings.Contains(g.Note, "not confirmed within") {
		t.Errorf("guarded generation %+v", g)
	}
	if back := r.gen(p.N + 1); back.Restores != 1 || back.Command != "rollback guard" {
		t.Errorf("the rollback's record %+v", back)
	}
	if !r.holds(kept) || r.k.Calls(nft.OpApply) != 5 {
		t.Errorf("%d applies; the kernel holds:\n%s", r.k.Calls(nft.OpApply), r.k.Dump())
	}
}

// TestGuardLeavesAConfirmedGeneration: a confirmed generation has nothing
// to roll back.
func TestGuardLeavesAConfirmedGeneration(t *testing.T) {
	r := newRig(t)
	p := r.pending(planOf(plan.ModeEnforce, 443))
	if _, err := Confirm(r.st, r.k.Target(), plan.DefaultTable); err != nil {
		t.Fatal(err)
	}
	if err := r.guardOf(p.N, r.k, GuardOptions{}); err != nil || r.gen(p.N).State != store.GenConfirmed {
		t.Errorf("guard: %v, state %s", err, r.gen(p.N).State)
	}
	if r.k.Calls(nft.OpApply) != 1 {
		t.Error("the guard changed the kernel")
	}
}

// dropping is a kernel whose default rules drop 1,000 packets between two
// readings.
type dropping struct {
	*nft.Fake
	reads atomic.Int64
}

func (d *dropping) Status(table string, elements bool) (*nft.Status, error) {
	d.Drop(table, 1000)
	d.reads.Add(1)
	return d.Fake.Status(table, elements)
}

// TestGuardRollsBackOnDropRate: a table that drops faster than
// --rollback-if-denied-rate is rolled back before its deadline (to no
// table: nothing was kept before it).
func TestGuardRollsBackOnDropRate(t *testing.T) {
	r := newRig(t)
	p := r.pending(planOf(plan.ModeEnforce, 443))
	k := &dropping{Fake: r.k}
	if err := r.guardOf(p.N, k, GuardOptions{MaxDeniedRate: 10}); err != nil {
		t.Fatal(err)
	}
	if g := r.gen(p.N); g.State != store.GenRolledBack || !strings.Contains(g.Note, "dropped packets/s") {
		t.Errorf("guarded generation %+v", g)
	}
	if r.k.Dump() != "" || k.reads.Load() < 2 {
		t.Errorf("after %d readings the kernel holds:\n%s", k.reads.Load(), r.k.Dump())
	}
}

// TestPlansToKeep: the plans the current generations, their restores and
// default rollbacks, and pending rollbacks need.
func TestPlansToKeep(t *testing.T) {
	g := func(n uint64, target, mode, state string, restores, rollbackTo uint64) store.Generation {
		return store.Generation{N: n, Target: target, Table: "egress", Mode: mode, State: state, Restores: restores, RollbackTo: rollbackTo}
	}
	gens := []store.Generation{
		g(1, "", "audit", store.GenApplied, 0, 0),
		g(2, "", "enforce", store.GenApplied, 0, 0),
		g(3, "", "audit", store.GenApplied, 1, 0), // restores 1
		g(4, "", "enforce", store.GenPending, 0, 3),
		g(5, "/run/netns/x", "audit", store.GenApplied, 0, 0),
	}
	keep := PlansToKeep(gens)
	slices.Sort(keep)
	// 4 is current; it rolls back to 3, which restored 1 (also the kept
	// generation's plan, and the default rollback's); 5 is another
	// target's current one. 2 is needed by nothing.
	if keep = slices.Compact(keep); !slices.Equal(keep, []uint64{1, 4, 5}) {
		t.Errorf("plans kept: %v, want [1 4 5]", keep)
	}
}

// TestGuardStopsWhenTheNamespaceIsGone: a rollback into a namespace that
// no longer exists has nothing to roll back, and says so.
func TestGuardStopsWhenTheNamespaceIsGone(t *testing.T) {
	r := newRig(t)
	gone := nft.NewFake(nft.Target{Netns: "egress-test-gone"})
	p := r.apply(planOf(plan.ModeEnforce, 443), Options{ConfirmWithin: time.Millisecond, StartGuard: func(uint64) (int, error) { return 1, nil }})
	gone.Fail(nft.OpRemove, errors.New("no such namespace"))
	if err := r.guardOf(p.N, gone, GuardOptions{}); err == nil || !strings.Contains(err.Error(), "no such namespace") {
		t.Errorf("guard: %v", err)
	}
	if g := r.gen(p.N); g.State != store.GenRolledBack {
		t.Errorf("guarded generation %+v", g)
	}
}

// rig is a store and a fake kernel: rollout runs on it as on the real
// one, without root.
type rig struct {
	t  *testing.T
	k  *nft.Fake
	st *store.Store
	db string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	db := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, k: nft.NewFake(nft.Target{}), st: st, db: db}
}

// quiet logs nothing.
var quiet = slog.New(slog.DiscardHandler)

// planOf builds a table allowing uid 1000 to 192.0.2.1 on each port, with
// a DNS server (so that it passes the pre-apply check).
func planOf(mode plan.Mode, ports ...uint16) *plan.Plan {
	var flows []store.Flow
	for _, p := range ports {
		flows = append(flows, plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", p, 3, plantest.T0))
	}
	return plan.Build(flows, plan.Options{Mode: mode, Now: plantest.T0, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
}

// apply applies p as a new generation and fails the test on an error.
func (r *rig) apply(p *plan.Plan, o Options) *store.Generation {
	r.t.Helper()
	o.Store, o.Logger = r.st, quiet
	g, _, err := Apply(r.k, p, o)
	if err != nil {
		r.t.Fatalf("apply: %v", err)
	}
	return g
}

// pending applies p with a confirm window; its guard is a process that
// is not one (this test's): it counts as gone.
func (r *rig) pending(p *plan.Plan) *store.Generation {
	r.t.Helper()
	return r.apply(p, Options{ConfirmWithin: time.Hour, StartGuard: func(uint64) (int, error) { return 1, nil }})
}

// gen reads generation n.
func (r *rig) gen(n uint64) store.Generation {
	r.t.Helper()
	gens, err := r.st.Generations()
	if err != nil {
		r.t.Fatal(err)
	}
	if g := find(gens, n); g != nil {
		return *g
	}
	r.t.Fatalf("no generation %d", n)
	return store.Generation{}
}

// holds says whether the kernel holds exactly p's table.
func (r *rig) holds(p *plan.Plan) bool {
	in := r.k.Plan(p.Table)
	return in != nil && in.String() == p.String()
}

// rejected is an error the fake kernel answers as a refused batch.
var rejected = errors.Join(nft.ErrRejected, errors.New("injected"))
