//go:build linux

package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// ErrNothingToConfirm means the current generation is not waiting for a
// confirmation.
var ErrNothingToConfirm = errors.New("nothing to confirm")

// Confirm keeps the pending current generation: its guard will not roll
// it back.
func Confirm(st *store.Store, t nft.Target, table string) (*store.Generation, error) {
	unlock, err := lockApplies(context.Background(), st.Path(), DefaultLockWait, slog.Default())
	if err != nil {
		return nil, err
	}
	defer unlock()
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	// The newest pending or recently rolled-back generation is the one
	// the operator means.
	var last *store.Generation
	for i := len(gens) - 1; i >= 0; i-- {
		if g := &gens[i]; ours(g, targetKey(t), table) && !g.Deadline.IsZero() {
			last = g
			break
		}
	}
	if last == nil {
		return nil, fmt.Errorf("%w: no apply with --confirm-within for table inet %s in %s", ErrNothingToConfirm, table, t)
	}
	g, err := st.UpdateGeneration(last.N, func(g *store.Generation) error {
		switch g.State {
		case store.GenPending, store.GenApplying:
			g.State = store.GenConfirmed
			g.Note = "confirmed at " + time.Now().UTC().Format(time.RFC3339)
			return nil
		case store.GenConfirmed:
			return fmt.Errorf("%w: generation %d is already confirmed", ErrNothingToConfirm, g.N)
		case store.GenRolledBack:
			return fmt.Errorf("generation %d was already rolled back (%s)", g.N, g.Note)
		}
		return fmt.Errorf("%w: generation %d is %s", ErrNothingToConfirm, g.N, g.State)
	})
	if err != nil {
		return nil, err
	}
	if err := syncApplied(st, t, table, knownPlan{}); err != nil {
		slog.Error("generation "+strconv.FormatUint(g.N, 10)+" is confirmed, but the files restore falls back on are not written", "err", err)
	}
	return &g, nil
}

// LoadPlan reads the plan recorded with generation n.
func LoadPlan(st *store.Store, n uint64) (*plan.Plan, error) {
	data, err := st.GenerationPlan(n)
	if err != nil {
		return nil, err
	}
	var p plan.Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("decode plan of generation %d: %w", n, err)
	}
	return &p, nil
}

// loadPlanAny reads generation n's plan from the store, or else from the
// files beside it.
func loadPlanAny(st *store.Store, t nft.Target, table string, n uint64) (*plan.Plan, error) {
	p, err := LoadPlan(st, n)
	if err == nil {
		return p, nil
	}
	if fp, ferr := readAppliedPlan(AppliedDir(st.Path(), targetKey(t), table), n); ferr == nil {
		return fp, nil
	}
	return nil, err
}

// backTo is what a rollback or restore puts back: a kept generation and
// its plan; a nil plan removes the table.
type backTo struct {
	gen  *store.Generation // nil: no generation, remove the table
	plan *plan.Plan
}

// resolveBack finds kept generation n (0: none) of the target and table
// and loads its plan.
func resolveBack(st *store.Store, gens []store.Generation, t nft.Target, table string, n uint64) (backTo, error) {
	if n == 0 {
		return backTo{}, nil
	}
	g := find(gens, n)
	if g == nil || !ours(g, targetKey(t), table) {
		return backTo{}, fmt.Errorf("generation %d: %w for table inet %s in %s", n, store.ErrNoGeneration, table, t)
	}
	if !g.Kept() {
		note := ""
		if g.Note != "" {
			note = " (" + g.Note + ")"
		}
		return backTo{}, fmt.Errorf("generation %d is %s%s: only a generation that was applied and kept (applied, or confirmed in time) can be put back", n, g.State, note)
	}
	if g.Mode == ModeRemoved {
		return backTo{gen: g}, nil
	}
	p, err := loadPlanAny(st, t, table, g.Effective())
	if err != nil {
		return backTo{}, err
	}
	return backTo{gen: g, plan: p}, nil
}

// n is the generation put back (0: none).
func (b backTo) n() uint64 {
	if b.gen == nil {
		return 0
	}
	return b.gen.N
}

// check runs the pre-apply check on a table that drops traffic (never on
// the closed table of boot_policy closed, nor on a removal); with force a
// refusal is only a warning.
func (b backTo) check(force bool, log *slog.Logger) error {
	if b.plan == nil || b.gen.Mode == ModeClosed {
		return nil
	}
	err := plan.Guard(b.plan, nil)
	if err != nil && force {
		log.Warn("--force: " + err.Error())
		return nil
	}
	return err
}

// apply puts the table in the kernel (or removes ours): the one way
// rollback, restore and the guard change the kernel.
func (b backTo) apply(k nft.Kernel, table string) error {
	if b.plan == nil {
		_, err := k.Remove(table)
		return err
	}
	if _, err := k.Apply(b.plan); err != nil {
		return fmt.Errorf("restore generation %d: %w", b.gen.N, err)
	}
	return nil
}

// record adds the generation saying what apply did.
func (b backTo) record(st *store.Store, t nft.Target, table, command, reason string) (store.Generation, error) {
	if b.plan == nil {
		return st.AddGeneration(store.Generation{Target: targetKey(t), Table: table, Mode: ModeRemoved,
			State: store.GenApplied, Command: command, Reason: reason}, nil)
	}
	g := generationOf(b.plan, t, command, reason)
	g.State, g.Restores = store.GenApplied, b.gen.Effective()
	if b.gen.Mode == ModeClosed {
		g.Mode = ModeClosed
	}
	return st.AddGeneration(g, nil)
}

// sync writes the files beside the store after generation g put b back.
func (b backTo) sync(st *store.Store, t nft.Target, table string, g store.Generation, log *slog.Logger) {
	if err := syncApplied(st, t, table, knownPlan{n: g.Effective(), plan: b.plan}); err != nil {
		log.Error("generation "+strconv.FormatUint(g.N, 10)+" is applied, but the files restore falls back on are not written", "err", err)
	}
}

// putBack applies and records, then writes the files beside the store.
// The caller holds the lock.
func (b backTo) putBack(st *store.Store, k nft.Kernel, table, command, reason string, log *slog.Logger) (*store.Generation, error) {
	if err := b.apply(k, table); err != nil {
		return nil, err
	}
	g, err := b.record(st, k.Target(), table, command, reason)
	if err != nil {
		return nil, err
	}
	b.sync(st, k.Target(), table, g, log)
	return &g, nil
}

// RollbackOptions say where a rollback goes.
type RollbackOptions struct {
	// To is the generation to put back; 0: the newest earlier kept
	// generation with another table (none: the table is removed).
	To      uint64
	Command string
	Reason  string
	// Force puts back a table that fails the pre-apply check.
	Force    bool
	LockWait time.Duration
	Logger   *slog.Logger
}

// Rollback puts an earlier kept generation back, after the pre-apply check
// of its plan when it drops traffic. A pending current generation is
// marked rolled back.
func Rollback(st *store.Store, k nft.Kernel, table string, o RollbackOptions) (*store.Generation, error) {
	log := orDefault(o.Logger)
	unlock, err := lockApplies(context.Background(), st.Path(), lockWait(o.LockWait), log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	cur := current(gens, targetKey(k.Target()), table)
	to := o.To
	if to == 0 && cur != nil {
		to = defaultBack(gens, cur)
	}
	b, err := resolveBack(st, gens, k.Target(), table, to)
	if err != nil {
		return nil, err
	}
	if err := b.check(o.Force, log); err != nil {
		return nil, fmt.Errorf("roll back to generation %d: %w", to, err)
	}
	if cur != nil && pendingish(cur) {
		// A rollback by hand of a pending generation ends its window.
		if err := markRolledBack(st, cur.N, "rolled back by hand: "+o.Reason); err != nil && !errors.Is(err, errResolved) {
			return nil, err
		}
	}
	return b.putBack(st, k, table, o.Command, o.Reason, log)
}

// Remove deletes our table and records the removal, so that a restore at
// boot leaves no table either. A pending generation is ended (its guard
// then has nothing to roll back). removed says whether a table was there;
// g is nil when there was nothing to record.
func Remove(st *store.Store, k nft.Kernel, table string, o Options) (removed bool, g *store.Generation, err error) {
	log := orDefault(o.Logger)
	unlock, err := lockApplies(context.Background(), st.Path(), lockWait(o.LockWait), log)
	if err != nil {
		return false, nil, err
	}
	defer unlock()
	gens, err := st.Generations()
	if err != nil {
		return false, nil, err
	}
	t := k.Target()
	for i := range gens {
		if ours(&gens[i], targetKey(t), table) && pendingish(&gens[i]) {
			if err := markRolledBack(st, gens[i].N, "ended by remove: "+o.Reason); err != nil && !errors.Is(err, errResolved) {
				return false, nil, err
			}
		}
	}
	if removed, err = k.Remove(table); err != nil {
		return false, nil, err
	}
	if cur := current(gens, targetKey(t), table); !removed && (cur == nil || cur.Mode == ModeRemoved) {
		return false, nil, nil
	}
	rec, err := backTo{}.record(st, t, table, o.Command, o.Reason)
	if err != nil {
		return removed, nil, fmt.Errorf("the table is removed, but the store does not record it (restore would put it back): %w", err)
	}
	if err := syncApplied(st, t, table, knownPlan{}); err != nil {
		log.Error("the files restore falls back on are not written", "err", err)
	}
	return removed, &rec, nil
}
