//go:build linux

package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/egresskit/egress/store"
)

// Generations: every apply, rollback and removal through these functions
// is recorded in the store with its plan, so any earlier table can be put
// back, and "we don't know why this is here" has an answer.
//
// Commit-confirmed apply: a generation applied with a confirm window is
// recorded first, with the generation to go back to; then a guard process
// of its own (started by the caller, detached from the terminal) is told
// its number; then the table is applied. Unless confirm marks the
// generation confirmed before the deadline, the guard rolls back. The
// store's file lock makes confirm and the guard's rollback exclusive: the
// first to change the generation's state wins.

// ModeRemoved marks a generation that removed the table.
const ModeRemoved = "removed"

// RolloutOptions say how to record and guard an apply.
type RolloutOptions struct {
	Store   *store.Store
	Command string // the command line, for history
	Reason  string
	// ConfirmWithin, when set, rolls back unless Confirm runs in time.
	ConfirmWithin time.Duration
	// StartGuard starts the detached guard process of generation n; it
	// returns its pid. Required with ConfirmWithin.
	StartGuard func(n uint64) (int, error)
}

func targetKey(t Target) string { return t.Path() }

// current is the newest generation of the target and table that took
// effect (nil when there is none).
func current(gens []store.Generation, t Target, table string) *store.Generation {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if g.Target != targetKey(t) || g.Table != table {
			continue
		}
		if g.State == store.GenFailed {
			continue
		}
		return g
	}
	return nil
}

// History returns the generations of the target and table, oldest first,
// and the number of the current one (0: none).
func History(st *store.Store, t Target, table string) ([]store.Generation, uint64, error) {
	gens, err := st.Generations()
	if err != nil {
		return nil, 0, err
	}
	var out []store.Generation
	for _, g := range gens {
		if g.Target == targetKey(t) && g.Table == table {
			out = append(out, g)
		}
	}
	var cur uint64
	if c := current(gens, t, table); c != nil {
		cur = c.N
	}
	return out, cur, nil
}

func generationOf(p *Plan, t Target, o RolloutOptions) store.Generation {
	g := store.Generation{
		Target: targetKey(t), Table: p.Table, Mode: string(p.Mode),
		EnforceUIDs: p.EnforceUIDs, AuditUIDs: p.AuditUIDs,
		Rules: len(p.Rules), Command: o.Command, Reason: o.Reason,
	}
	for _, s := range p.Sets {
		g.Elements += len(s.Elements)
	}
	return g
}

// ApplyGeneration applies p like Apply and records it as a new
// generation. With a confirm window, the generation is pending until
// Confirm, and the guard restores the current generation (or removes the
// table when there is none) if it is not confirmed in time.
func ApplyGeneration(p *Plan, t Target, o RolloutOptions) (*store.Generation, *ApplyResult, error) {
	gens, err := o.Store.Generations()
	if err != nil {
		return nil, nil, err
	}
	planJSON, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("encode plan: %w", err)
	}
	g := generationOf(p, t, o)
	g.State = store.GenApplying
	if o.ConfirmWithin > 0 {
		if o.StartGuard == nil {
			return nil, nil, errors.New("confirm window without a guard")
		}
		if cur := current(gens, t, p.Table); cur != nil && cur.Mode != ModeRemoved {
			g.RollbackTo = cur.Effective()
		}
		g.Deadline = time.Now().Add(o.ConfirmWithin).UTC()
	}
	g, err = o.Store.AddGeneration(g, planJSON)
	if err != nil {
		return nil, nil, err
	}
	if o.ConfirmWithin > 0 {
		pid, err := o.StartGuard(g.N)
		if err != nil {
			_, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
				g.State, g.Note = store.GenFailed, "the rollback guard did not start: "+err.Error()
				return nil
			})
			return nil, nil, fmt.Errorf("start the rollback guard: %w (nothing was applied)", err)
		}
		g, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error { g.GuardPID = pid; return nil })
	}
	res, err := Apply(p, t)
	if err != nil && !errors.Is(err, ErrRejected) && res != nil {
		// Applied, but the read-back disagreed: keep the generation, and
		// say so.
		g, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
			g.State, g.Note = applyState(o), "read-back failed: "+err.Error()
			return nil
		})
		return &g, res, err
	}
	if err != nil {
		g, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
			g.State, g.Note = store.GenFailed, err.Error()
			return nil
		})
		return &g, nil, err
	}
	g, err = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
		if g.State != store.GenApplying {
			return fmt.Errorf("generation %d became %s while it was applied", g.N, g.State)
		}
		g.State = applyState(o)
		return nil
	})
	return &g, res, err
}

func applyState(o RolloutOptions) string {
	if o.ConfirmWithin > 0 {
		return store.GenPending
	}
	return store.GenApplied
}

// ErrNothingToConfirm means the current generation is not waiting for a
// confirmation.
var ErrNothingToConfirm = errors.New("nothing to confirm")

// Confirm keeps the pending current generation: its guard will not roll
// it back.
func Confirm(st *store.Store, t Target, table string) (*store.Generation, error) {
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	// The newest pending or recently rolled-back generation is the one
	// the operator means.
	var last *store.Generation
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if g.Target == targetKey(t) && g.Table == table && !g.Deadline.IsZero() {
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
	return &g, nil
}

// loadPlan reads the plan recorded with generation n.
func loadPlan(st *store.Store, n uint64) (*Plan, error) {
	data, err := st.GenerationPlan(n)
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("decode plan of generation %d: %w", n, err)
	}
	return &p, nil
}

// restore puts generation n's table back (removes the table for n == 0 or
// a removal) and records it as a new generation.
func restore(st *store.Store, t Target, table string, n uint64, command, reason string) (*store.Generation, error) {
	if n == 0 {
		if _, err := Remove(t, table); err != nil {
			return nil, err
		}
		g, err := st.AddGeneration(store.Generation{Target: targetKey(t), Table: table, Mode: ModeRemoved,
			State: store.GenApplied, Command: command, Reason: reason}, nil)
		return &g, err
	}
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(gens, func(g store.Generation) bool { return g.N == n })
	if i < 0 || gens[i].Target != targetKey(t) || gens[i].Table != table {
		return nil, fmt.Errorf("generation %d: %w for table inet %s in %s", n, store.ErrNoGeneration, table, t)
	}
	if gens[i].Mode == ModeRemoved {
		return restore(st, t, table, 0, command, reason)
	}
	p, err := loadPlan(st, gens[i].Effective())
	if err != nil {
		return nil, err
	}
	if _, err := Apply(p, t); err != nil {
		return nil, fmt.Errorf("restore generation %d: %w", n, err)
	}
	g := generationOf(p, t, RolloutOptions{Command: command, Reason: reason})
	g.State, g.Restores = store.GenApplied, gens[i].Effective()
	g, err = st.AddGeneration(g, nil)
	return &g, err
}

// Rollback puts an earlier generation back: to, or when to is 0 the one
// before the current (the newest earlier generation that took effect with
// another table); with none, it removes the table.
func Rollback(st *store.Store, t Target, table string, to uint64, command, reason string) (*store.Generation, error) {
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	cur := current(gens, t, table)
	if to == 0 && cur != nil {
		for i := len(gens) - 1; i >= 0; i-- {
			g := &gens[i]
			if g.N >= cur.N || g.Target != targetKey(t) || g.Table != table {
				continue
			}
			if g.State == store.GenFailed || g.State == store.GenRolledBack || g.State == store.GenApplying {
				continue
			}
			if g.Effective() == cur.Effective() || (g.Mode == ModeRemoved && cur.Mode == ModeRemoved) {
				continue
			}
			to = g.N
			break
		}
	}
	if cur != nil && (cur.State == store.GenPending || cur.State == store.GenApplying) {
		// A rollback by hand of a pending generation ends its window.
		_, _ = st.UpdateGeneration(cur.N, func(g *store.Generation) error {
			if g.State == store.GenPending || g.State == store.GenApplying {
				g.State, g.Note = store.GenRolledBack, "rolled back by hand: "+reason
			}
			return nil
		})
	}
	return restore(st, t, table, to, command, reason)
}

// GuardOptions tune a rollback guard.
type GuardOptions struct {
	// MaxDeniedRate rolls back before the deadline when the default rule
	// drops more packets per second (0: off).
	MaxDeniedRate float64
	Poll          time.Duration // default 500 ms
	Log           func(format string, args ...any)
}

// GuardGeneration watches pending generation n until it is confirmed, or its
// deadline passes (or the drop rate exceeds the limit), and then rolls it
// back. It is the body of the detached guard process.
func GuardGeneration(ctx context.Context, st *store.Store, t Target, n uint64, o GuardOptions) error {
	if o.Poll == 0 {
		o.Poll = 500 * time.Millisecond
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var lastDrops uint64
	var lastAt time.Time
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for {
		gens, err := st.Generations()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(gens, func(g store.Generation) bool { return g.N == n })
		if i < 0 {
			return fmt.Errorf("generation %d: %w", n, store.ErrNoGeneration)
		}
		g := gens[i]
		switch g.State {
		case store.GenConfirmed, store.GenFailed, store.GenRolledBack, store.GenApplied:
			logf("generation %d is %s: nothing to do", n, g.State)
			return nil
		}
		now := time.Now()
		why := ""
		if !now.Before(g.Deadline) {
			why = fmt.Sprintf("not confirmed within %s", g.Deadline.Sub(g.Time).Round(time.Second))
		} else if o.MaxDeniedRate > 0 && g.State == store.GenPending {
			if s, err := ReadStatus(t, g.Table, false); err == nil && s.Present {
				if !lastAt.IsZero() && s.Dropped.Packets >= lastDrops {
					rate := float64(s.Dropped.Packets-lastDrops) / now.Sub(lastAt).Seconds()
					if rate > o.MaxDeniedRate {
						why = fmt.Sprintf("%.1f dropped packets/s, above --rollback-if-denied-rate %g/s", rate, o.MaxDeniedRate)
					}
				}
				lastDrops, lastAt = s.Dropped.Packets, now
			}
		}
		if why != "" {
			return guardRollback(st, t, g, why, logf)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func guardRollback(st *store.Store, t Target, g store.Generation, why string, logf func(string, ...any)) error {
	_, err := st.UpdateGeneration(g.N, func(cur *store.Generation) error {
		if cur.State != store.GenPending && cur.State != store.GenApplying {
			return fmt.Errorf("generation %d became %s", cur.N, cur.State)
		}
		cur.State = store.GenRolledBack
		cur.Note = "rolled back automatically: " + why
		return nil
	})
	if err != nil {
		logf("not rolling back: %v", err)
		return nil // confirmed meanwhile
	}
	logf("rolling back generation %d: %s", g.N, why)
	reason := fmt.Sprintf("automatic rollback of generation %d: %s", g.N, why)
	r, err := restore(st, t, g.Table, g.RollbackTo, "rollback guard", reason)
	if err != nil {
		_, _ = st.UpdateGeneration(g.N, func(cur *store.Generation) error {
			cur.Note += "; the rollback failed: " + err.Error()
			return nil
		})
		return fmt.Errorf("roll back generation %d: %w", g.N, err)
	}
	logf("restored generation %d as generation %d", g.RollbackTo, r.N)
	return nil
}
