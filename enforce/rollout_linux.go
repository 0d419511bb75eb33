//go:build linux

package enforce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
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

// Generation modes besides the plan modes.
const (
	// ModeRemoved marks a generation that removed the table.
	ModeRemoved = "removed"
	// ModeClosed marks the minimal table restore applied for boot_policy
	// closed (ClosedPlan).
	ModeClosed = "closed"
)

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

func targetKey(t Target) string { return t.Path() }

func ours(g *store.Generation, target, table string) bool {
	return g.Target == target && g.Table == table
}

// pendingish: installed (or being installed) with a confirm window, and
// neither confirmed nor rolled back yet.
func pendingish(g *store.Generation) bool {
	return g.State == store.GenPending || g.State == store.GenApplying
}

// current is the newest generation of the target and table that took
// effect (nil when there is none).
func current(gens []store.Generation, t Target, table string) *store.Generation {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if !ours(g, targetKey(t), table) || g.State == store.GenFailed {
			continue
		}
		return g
	}
	return nil
}

// kept is the newest kept generation of the target and table older than
// before (any when before is 0); nil when there is none.
func kept(gens []store.Generation, target, table string, before uint64) *store.Generation {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if ours(g, target, table) && g.Kept() && (before == 0 || g.N < before) {
			return g
		}
	}
	return nil
}

func find(gens []store.Generation, n uint64) *store.Generation {
	i := slices.IndexFunc(gens, func(g store.Generation) bool { return g.N == n })
	if i < 0 {
		return nil
	}
	return &gens[i]
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
		if ours(&g, targetKey(t), table) {
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
// Confirm, and the guard puts the kept generation back (or removes the
// table when there is none) unless it is confirmed within the window,
// which starts when the kernel has the table.
func ApplyGeneration(p *Plan, t Target, o RolloutOptions) (*store.Generation, *ApplyResult, error) {
	log := orDefault(o.Logger)
	unlock, err := lockApplies(context.Background(), o.Store.Path(), lockWait(o.LockWait), log)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	if err := settlePending(o.Store, t, p.Table, o, log); err != nil {
		return nil, nil, err
	}
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
		if k := kept(gens, targetKey(t), p.Table, 0); k != nil && k.Mode != ModeRemoved {
			g.RollbackTo = k.N
		}
		// Provisional: it rolls back an apply that never finishes. The
		// window starts again when the kernel has the table.
		g.ConfirmWithin, g.Deadline = o.ConfirmWithin, time.Now().Add(o.ConfirmWithin).UTC()
		g.GuardBoot = bootID()
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
	res, applyErr := Apply(p, t)
	if applyErr != nil && (errors.Is(applyErr, ErrRejected) || res == nil) {
		g, _ = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
			g.State, g.Note = store.GenFailed, applyErr.Error()
			return nil
		})
		return &g, nil, applyErr
	}
	// Applied (when the read-back disagreed, keep the generation and say so).
	g, err = o.Store.UpdateGeneration(g.N, func(g *store.Generation) error {
		if g.State != store.GenApplying {
			return fmt.Errorf("generation %d became %s while it was applied", g.N, g.State)
		}
		g.State = applyState(o)
		if o.ConfirmWithin > 0 {
			g.Deadline = time.Now().Add(o.ConfirmWithin).UTC()
		}
		if applyErr != nil {
			g.Note = "read-back failed: " + applyErr.Error()
		}
		return nil
	})
	if err != nil {
		return &g, res, err
	}
	if err := syncApplied(o.Store, t, p.Table, knownPlan{g.N, p, planJSON, <-textc}); err != nil {
		log.Error("generation "+strconv.FormatUint(g.N, 10)+" is applied, but the files restore falls back on are not written", "err", err)
	}
	return &g, res, applyErr
}

func applyState(o RolloutOptions) string {
	if o.ConfirmWithin > 0 {
		return store.GenPending
	}
	return store.GenApplied
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
func settlePending(st *store.Store, t Target, table string, o RolloutOptions, log *slog.Logger) error {
	gens, err := st.Generations()
	if err != nil {
		return err
	}
	for i := range gens {
		g := &gens[i]
		if !ours(g, targetKey(t), table) || !pendingish(g) {
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
		_, err := rollbackPending(st, t, gens, g, o.Command, "rolled back by a forced apply: not confirmed", log)
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
func rollbackPending(st *store.Store, t Target, gens []store.Generation, g *store.Generation, command, note string, log *slog.Logger) (*store.Generation, error) {
	if err := markRolledBack(st, g.N, note); err != nil {
		return nil, err
	}
	b, err := resolveBack(st, gens, t, g.Table, rollbackTarget(gens, g))
	if err != nil {
		return nil, err
	}
	return b.putBack(st, t, g.Table, command, fmt.Sprintf("rollback of generation %d: %s", g.N, note), log)
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

// rollbackTarget is the generation a pending generation goes back to: the
// newest kept one before it (0: none, the table is removed).
func rollbackTarget(gens []store.Generation, g *store.Generation) uint64 {
	if k := kept(gens, g.Target, g.Table, g.N); k != nil && k.Mode != ModeRemoved {
		return k.N
	}
	return 0
}

// ErrNothingToConfirm means the current generation is not waiting for a
// confirmation.
var ErrNothingToConfirm = errors.New("nothing to confirm")

// Confirm keeps the pending current generation: its guard will not roll
// it back.
func Confirm(st *store.Store, t Target, table string) (*store.Generation, error) {
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
		g := &gens[i]
		if ours(g, targetKey(t), table) && !g.Deadline.IsZero() {
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

// loadPlanAny reads generation n's plan from the store, or else from the
// files beside it.
func loadPlanAny(st *store.Store, t Target, table string, n uint64) (*Plan, error) {
	p, err := loadPlan(st, n)
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
	plan *Plan
}

// resolveBack finds kept generation n (0: none) of the target and table
// and loads its plan.
func resolveBack(st *store.Store, gens []store.Generation, t Target, table string, n uint64) (backTo, error) {
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

// apply puts the table in the kernel (or removes ours).
func (b backTo) apply(t Target, table string) error {
	if b.plan == nil {
		_, err := Remove(t, table)
		return err
	}
	if _, err := Apply(b.plan, t); err != nil {
		return fmt.Errorf("restore generation %d: %w", b.gen.N, err)
	}
	return nil
}

// record adds the generation saying what apply did.
func (b backTo) record(st *store.Store, t Target, table, command, reason string) (store.Generation, error) {
	if b.plan == nil {
		return st.AddGeneration(store.Generation{Target: targetKey(t), Table: table, Mode: ModeRemoved,
			State: store.GenApplied, Command: command, Reason: reason}, nil)
	}
	g := generationOf(b.plan, t, RolloutOptions{Command: command, Reason: reason})
	g.State, g.Restores = store.GenApplied, b.gen.Effective()
	if b.gen.Mode == ModeClosed {
		g.Mode = ModeClosed
	}
	return st.AddGeneration(g, nil)
}

// putBack applies and records, then writes the files beside the store.
// The caller holds the lock.
func (b backTo) putBack(st *store.Store, t Target, table, command, reason string, log *slog.Logger) (*store.Generation, error) {
	if err := b.apply(t, table); err != nil {
		return nil, err
	}
	g, err := b.record(st, t, table, command, reason)
	if err != nil {
		return nil, err
	}
	if err := syncApplied(st, t, table, knownPlan{n: g.Effective(), plan: b.plan}); err != nil {
		log.Error("generation "+strconv.FormatUint(g.N, 10)+" is applied, but the files restore falls back on are not written", "err", err)
	}
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
func Rollback(st *store.Store, t Target, table string, o RollbackOptions) (*store.Generation, error) {
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
	cur := current(gens, t, table)
	to := o.To
	if to == 0 && cur != nil {
		to = defaultBack(gens, cur)
	}
	b, err := resolveBack(st, gens, t, table, to)
	if err != nil {
		return nil, err
	}
	if b.plan != nil && b.gen.Mode != ModeClosed {
		if err := Guard(b.plan, nil); err != nil {
			if !o.Force {
				return nil, fmt.Errorf("roll back to generation %d: %w", to, err)
			}
			log.Warn("--force: " + err.Error())
		}
	}
	if cur != nil && pendingish(cur) {
		// A rollback by hand of a pending generation ends its window.
		if err := markRolledBack(st, cur.N, "rolled back by hand: "+o.Reason); err != nil && !errors.Is(err, errResolved) {
			return nil, err
		}
	}
	return b.putBack(st, t, table, o.Command, o.Reason, log)
}

// RemoveGeneration deletes our table and records the removal, so that a
// restore at boot leaves no table either. A pending generation is ended
// (its guard then has nothing to roll back). removed says whether a table
// was there; g is nil when there was nothing to record.
func RemoveGeneration(st *store.Store, t Target, table string, o RolloutOptions) (removed bool, g *store.Generation, err error) {
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
	for i := range gens {
		if ours(&gens[i], targetKey(t), table) && pendingish(&gens[i]) {
			if err := markRolledBack(st, gens[i].N, "ended by remove: "+o.Reason); err != nil && !errors.Is(err, errResolved) {
				return false, nil, err
			}
		}
	}
	if removed, err = Remove(t, table); err != nil {
		return false, nil, err
	}
	if cur := current(gens, t, table); !removed && (cur == nil || cur.Mode == ModeRemoved) {
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

// defaultBack is the newest kept generation before cur with another table.
func defaultBack(gens []store.Generation, cur *store.Generation) uint64 {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if g.N >= cur.N || !ours(g, cur.Target, cur.Table) || !g.Kept() {
			continue
		}
		if g.Effective() == cur.Effective() || (g.Mode == ModeRemoved && cur.Mode == ModeRemoved) {
			continue
		}
		return g.N
	}
	return 0
}

// knownPlan is a plan the caller has at hand (and its JSON and nft text,
// when it has them).
type knownPlan struct {
	n    uint64
	plan *Plan
	raw  []byte
	text []byte
}

// syncApplied writes the files beside the store for the target and table:
// the current and the kept generation, and their plans (known, else from
// the store).
func syncApplied(st *store.Store, t Target, table string, known knownPlan) error {
	gens, err := st.Generations()
	if err != nil {
		return err
	}
	s := AppliedState{Target: targetKey(t), Table: table,
		Current: appliedGenOf(current(gens, t, table)), Kept: appliedGenOf(kept(gens, targetKey(t), table, 0))}
	return writeApplied(AppliedDir(st.Path(), targetKey(t), table), s, func(n uint64) (*Plan, []byte, []byte, error) {
		if known.plan != nil && known.n == n {
			return known.plan, known.raw, known.text, nil
		}
		p, err := loadPlan(st, n)
		return p, nil, nil, err
	})
}

// bootID identifies this boot of the kernel: a guard recorded in another
// boot is gone.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// guardAlive reports whether the guard process of pending generation g
// still runs: same boot, and its pid runs "confirm-guard --generation N".
func guardAlive(g *store.Generation) bool {
	if g.GuardPID <= 0 || (g.GuardBoot != "" && g.GuardBoot != bootID()) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", g.GuardPID))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	i := slices.Index(args, "--generation")
	return slices.Contains(args, "confirm-guard") && i >= 0 && i+1 < len(args) && args[i+1] == strconv.FormatUint(g.N, 10)
}
