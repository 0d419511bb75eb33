//go:build linux

// Package rollout changes the kernel's table one recorded generation at a
// time: apply (with reconcile --apply), confirm, rollback, remove and
// restore, the detached guard of a commit-confirmed apply, the lock that
// orders them, and the files beside the store that restore falls back on.
//
// Every apply, rollback and removal is recorded in the store with its
// plan, so any earlier table can be put back, and "we don't know why this
// is here" has an answer.
//
// Commit-confirmed apply: a generation applied with a confirm window is
// recorded first, with the generation to go back to; then a guard process
// of its own (started by the caller, detached from the terminal) is told
// its number; then the table is applied, and the window starts. Unless
// confirm marks the generation confirmed before the deadline, the guard
// rolls back. The store's file lock makes confirm and the guard's rollback
// exclusive: the first to change the generation's state wins.
//
// Order: every change of a table (apply, confirm, rollback, restore, the
// guard's rollback) holds the lock beside the store (LockPath) while it
// reads the generations and until the kernel and the store agree. An apply
// while a generation is pending is refused (Force rolls it back first), so
// a guard never rolls back over a later apply. A rollback, automatic or by
// hand, and a restore only put back a kept generation: applied, or
// confirmed in time; never a pending, rolled-back or failed one.
//
// The kernel is an nft.Kernel: the tests drive every path here with
// nft.Fake.
package rollout

import (
	"bytes"
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

// Options say how to record and guard an apply.
type Options struct {
	Store   *store.Store
	Command string // the command line, for history
	Reason  string
	// ConfirmWithin, when set, rolls back unless Confirm runs in time.
	ConfirmWithin time.Duration
	// StartGuard starts the detached guard process of generation n; it
	// returns its pid. Required with ConfirmWithin.
	StartGuard func(n uint64) (int, error)
	// Force rolls back a pending generation first; without it, an apply
	// while one is pending is refused (ErrPending).
	Force bool
	// LockWait bounds the wait for another change to finish (0:
	// DefaultLockWait).
	LockWait time.Duration
	Logger   *slog.Logger // default slog.Default()
}

func orDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

func lockWait(d time.Duration) time.Duration {
	if d == 0 {
		return DefaultLockWait
	}
	return d
}

// Apply applies p like k.Apply and records it as a new generation. With a
// confirm window, the generation is pending until Confirm, and the guard
// puts the kept generation back (or removes the table when there is none)
// unless it is confirmed within the window, which starts when the kernel
// has the table. It is the path of apply and reconcile --apply.
func Apply(k nft.Kernel, p *plan.Plan, o Options) (*store.Generation, *nft.ApplyResult, error) {
	log := orDefault(o.Logger)
	unlock, err := lockApplies(context.Background(), o.Store.Path(), lockWait(o.LockWait), log)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	if err := settlePending(o.Store, k, p.Table, o, log); err != nil {
		return nil, nil, err
	}
	planJSON, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("encode plan: %w", err)
	}
	g, err := recordApplying(k.Target(), p, planJSON, o)
	if err != nil {
		return nil, nil, err
	}
	// The script for the files beside the store renders while the kernel
	// works.
	textc := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		if p.Text(&b) == nil {
			textc <- b.Bytes()
		}
		close(textc)
	}()
	res, applyErr := k.Apply(p)
	if applyErr != nil && (errors.Is(applyErr, nft.ErrRejected) || res == nil) {
		g, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
			g.State, g.Note = store.GenFailed, applyErr.Error()
			return nil
		})
		return &g, nil, applyErr
	}
	if g, err = recordApplied(o, g.N, applyErr); err != nil {
		return &g, res, err
	}
	if err := syncApplied(o.Store, k.Target(), p.Table, knownPlan{g.N, p, planJSON, <-textc}); err != nil {
		log.Error("generation "+strconv.FormatUint(g.N, 10)+" is applied, but the files restore falls back on are not written", "err", err)
	}
	return &g, res, applyErr
}

// recordApplying records a generation being applied; with a confirm
// window, with its rollback and a provisional deadline, and starts its
// guard.
func recordApplying(t nft.Target, p *plan.Plan, planJSON []byte, o Options) (store.Generation, error) {
	g := generationOf(p, t, o.Command, o.Reason)
	g.State = store.GenApplying
	if o.ConfirmWithin > 0 {
		if o.StartGuard == nil {
			return g, errors.New("confirm window without a guard")
		}
		gens, err := o.Store.Generations()
		if err != nil {
			return g, err
		}
		if k := kept(gens, targetKey(t), p.Table, 0); k != nil && k.Mode != ModeRemoved {
			g.RollbackTo = k.N
		}
		// Provisional: it rolls back an apply that never finishes. The
		// window starts again when the kernel has the table.
		g.ConfirmWithin, g.Deadline = o.ConfirmWithin, time.Now().Add(o.ConfirmWithin).UTC()
		g.GuardBoot = bootID()
	}
	g, err := o.Store.AddGeneration(g, planJSON)
	if err != nil || o.ConfirmWithin <= 0 {
		return g, err
	}
	pid, err := o.StartGuard(g.N)
	if err != nil {
		_, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
			g.State, g.Note = store.GenFailed, "the rollback guard did not start: "+err.Error()
			return nil
		})
		return g, fmt.Errorf("start the rollback guard: %w (nothing was applied)", err)
	}
	g, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error { g.GuardPID = pid; return nil })
	return g, nil
}

// recordApplied marks generation n applied, or pending with its window
// starting now; a read-back that failed (readErr) is kept in its note.
func recordApplied(o Options, n uint64, readErr error) (store.Generation, error) {
	return o.Store.UpdateGeneration(n, func(g *store.Generation) error {
		if g.State != store.GenApplying {
			return fmt.Errorf("generation %d became %s while it was applied", g.N, g.State)
		}
		g.State = store.GenApplied
		if o.ConfirmWithin > 0 {
			g.State, g.Deadline = store.GenPending, time.Now().Add(o.ConfirmWithin).UTC()
		}
		if readErr != nil {
			g.Note = "read-back failed: " + readErr.Error()
		}
		return nil
	})
}

// ErrPending means a generation applied with a confirm window is neither
// confirmed nor rolled back yet.
var ErrPending = errors.New("a generation is waiting for confirmation")

// errResolved: the generation is no longer pending (confirmed, rolled back
// or failed meanwhile).
var errResolved = errors.New("no longer pending")

// settlePending deals with the unfinished generations of the target and
// table before an apply (the caller holds the lock, so no other apply is
// running): one whose apply died before the kernel answered is marked
// failed; a pending one refuses the apply, or with Force is rolled back.
func settlePending(st *store.Store, k nft.Kernel, table string, o Options, log *slog.Logger) error {
	gens, err := st.Generations()
	if err != nil {
		return err
	}
	for i := range gens {
		g := &gens[i]
		if !ours(g, targetKey(k.Target()), table) || !pendingish(g) {
			continue
		}
		if g.State == store.GenApplying && g.Deadline.IsZero() {
			if err := markInterrupted(st, g.N); err != nil {
				return err
			}
			continue
		}
		if !o.Force {
			return pendingError(g)
		}
		log.Warn(fmt.Sprintf("--force: rolling back generation %d first (%s, not confirmed)", g.N, g.State))
		_, err := rollbackPending(st, k, gens, g, o.Command, "rolled back by a forced apply: not confirmed", log)
		if err != nil && !errors.Is(err, errResolved) {
			return fmt.Errorf("roll back pending generation %d: %w", g.N, err)
		}
	}
	return nil
}

func markInterrupted(st *store.Store, n uint64) error {
	_, err := st.UpdateGeneration(n, func(g *store.Generation) error {
		if g.State == store.GenApplying {
			g.State = store.GenFailed
			g.Note = "interrupted: its apply ended before the kernel's answer was recorded (the kernel may have held its table until the next change)"
		}
		return nil
	})
	return err
}

func pendingError(g *store.Generation) error {
	fix := `run "egress-enforce confirm" to keep it, or "egress-enforce rollback" to drop it, then apply again (apply --force rolls it back first)`
	if guardAlive(g) {
		return fmt.Errorf("%w: generation %d (%s mode) is %s until %s, and its guard (pid %d) rolls it back unless it is confirmed: %s",
			ErrPending, g.N, g.Mode, g.State, g.Deadline.Local().Format(time.DateTime), g.GuardPID, fix)
	}
	return fmt.Errorf("%w: generation %d (%s mode) is %s, but its guard (pid %d) is gone, so nothing will roll it back: %s",
		ErrPending, g.N, g.Mode, g.State, g.GuardPID, fix)
}

// rollbackPending marks pending generation g rolled back (unless it was
// confirmed meanwhile: errResolved) and puts the kept generation before it
// back. The caller holds the lock.
func rollbackPending(st *store.Store, k nft.Kernel, gens []store.Generation, g *store.Generation, command, note string, log *slog.Logger) (*store.Generation, error) {
	if err := markRolledBack(st, g.N, note); err != nil {
		return nil, err
	}
	b, err := resolveBack(st, gens, k.Target(), g.Table, rollbackTarget(gens, g))
	if err != nil {
		return nil, err
	}
	return b.putBack(st, k, g.Table, command, fmt.Sprintf("rollback of generation %d: %s", g.N, note), log)
}

func markRolledBack(st *store.Store, n uint64, note string) error {
	_, err := st.UpdateGeneration(n, func(g *store.Generation) error {
		if !pendingish(g) {
			return fmt.Errorf("%w: generation %d is %s", errResolved, g.N, g.State)
		}
		g.State, g.Note = store.GenRolledBack, note
		return nil
	})
	return err
}
