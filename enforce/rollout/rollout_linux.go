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
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/phase"
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
	// Approve, when set, gives the approvals of generation n, made ready
	// and written into the store's write transaction while the kernel
	// works (the store stays locked meanwhile), and committed with the
	// generation once the table is applied and verified; rolled back
	// after a failed read-back or a refusal.
	Approve func(n uint64) *store.Approvals
	// ApproveAfter, when set with Approve, gives Approve's approvals of
	// generation n when it is applied as delta d from the plan of
	// generation base (the kernel's table as the store says; whatever
	// the kernel then does): for example store.NewApprovalsAfter, which
	// looks up only the flows d adds when the store knows base's are all
	// still approved.
	ApproveAfter func(n, base uint64, d *plan.Delta) *store.Approvals
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
	phase.Mark("locked")
	if err := settlePending(o.Store, k, p.Table, o, log); err != nil {
		return nil, nil, err
	}
	phase.Mark("pending settled")
	index := indexOf(p)
	base := baseFor(o.Store, k.Target(), p.Table)
	phase.Mark("delta base read")
	g, err := recordApplying(k.Target(), p, o)
	if err != nil {
		return nil, nil, err
	}
	phase.Mark("generation recorded applying")
	var approvals *approvalsWrite
	if base.index == nil { // a replace: made beside the whole plan's renderings
		approvals = readyApprovals(o, g.N)
	}
	ap := startApplying(k, p, o, g.N, base, index)
	if base.index != nil {
		// A delta: its index and the delta first, with both cores; the
		// approvals while the kernel applies it.
		if ap.delta != nil && o.Approve != nil && o.ApproveAfter != nil {
			approve, d := o.ApproveAfter, ap.delta
			o.Approve = func(n uint64) *store.Approvals { return approve(n, base.gen, d) }
		}
		approvals = readyApprovals(o, g.N)
	}
	defer approvals.abort()
	phase.Mark("delta made")
	res, applyErr := ap.apply()
	phase.Mark("kernel applied and verified")
	if res != nil && res.KernelDiffers {
		log.Warn("the table in the kernel is not the one the store says: the whole table was replaced, not changed",
			"table", p.Table, "generation", g.N, "store_says", base.gen, "reason", res.FullReason)
	}
	if applyErr != nil && (errors.Is(applyErr, nft.ErrRejected) || res == nil) {
		approvals.abort()        // nothing of it is written, before the store's next write
		packed := ap.packed(log) // rendered for the store: its files go too
		ap.discard()
		g, _ = o.Store.UpdateGenerationPlan(g.N, packed, func(g *store.Generation) error {
			g.State, g.Note = store.GenFailed, applyErr.Error()
			return nil
		})
		return &g, nil, applyErr
	}
	var approveErr error
	if g, approveErr, err = recordApplied(o, g.N, applyErr, ap.packed(log), ap.planBase(), approvals); err != nil {
		return &g, res, err
	}
	phase.Mark("generation recorded applied, approvals written")
	ap.writeFiles(o.Store, log)
	phase.Mark("files beside the store written")
	if applyErr == nil {
		applyErr = approveErr
	}
	return &g, res, applyErr
}

// approvalsWrite is an apply's approvals: made ready in a goroutine of their
// own, and written into the store's write transaction (w) while the
// kernel works; that transaction records the generation applied and
// commits once the table is verified, or is rolled back.
type approvalsWrite struct {
	ch  <-chan *store.Approvals
	a   *store.Approvals
	got bool
	w   *store.ApprovingWrite
}

// readyApprovals makes o.Approve's approvals of generation n ready in a
// goroutine of its own, and begins the store's write of them (nil: no
// approvals).
func readyApprovals(o Options, n uint64) *approvalsWrite {
	if o.Approve == nil {
		return nil
	}
	ch := make(chan *store.Approvals, 1)
	go func() { ch <- o.Approve(n); phase.Mark("approvals made (beside)") }()
	p := &approvalsWrite{ch: ch}
	p.w = o.Store.BeginApprovingWrite(p.get)
	return p
}

// get waits for the approvals. (The write's goroutine calls it first;
// after the write ends, the fallback of recordApplied.)
func (p *approvalsWrite) get() *store.Approvals {
	if !p.got {
		p.a, p.got = <-p.ch, true
	}
	return p.a
}

// abort rolls the write of the approvals back: nothing of it is written.
func (p *approvalsWrite) abort() {
	if p != nil {
		p.w.Abort()
	}
}

// rendered is what render makes of a plan beside the kernel's work.
type rendered struct {
	dir           string
	packed        []byte
	err, filesErr error
	// packedDone closes when packed (or err) is set: the store may
	// record it while the files are still being written.
	packedDone, done chan struct{}
}

// renderPiece is the size of the pieces render encodes the plan's JSON
// in: it goes to plan-N.json and to the store's packing a piece at a time
// (four buffers of about renderPiece bytes, not 27 MB of fresh pages at
// 100,000 elements); the nft script goes to plan-N.nft through a buffer
// of its own the same way (plan.WriteText: not 17 MB, twice).
const renderPiece = 256 << 10

// render encodes p as JSON and packs it for the store, renders its nft
// script, and writes both to the files of generation n in dir (named by
// state.json only once the generation is recorded), in goroutines of their
// own: each file is written as it is made (plan-N.json goes in place
// after plan-N.nft, as writePlanFiles does; a file whose rendering fails
// is not put in place); packedDone closes once it is packed, done when
// all is done.
func render(p *plan.Plan, dir string, n uint64) *rendered {
	r := &rendered{dir: dir, packedDone: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		dirErr := os.MkdirAll(dir, 0o700)
		if dirErr != nil {
			dirErr = fmt.Errorf("write the applied tables: %w", dirErr)
		}
		var wg sync.WaitGroup
		var textErr, nftErr, jsonErr error
		nftDone := make(chan struct{})
		wg.Go(func() {
			defer close(nftDone)
			if dirErr != nil {
				textErr = p.WriteText(io.Discard)
				return
			}
			nftErr = writeAtomicWith(planFile(dir, n, ".nft"), func(f *os.File) error {
				w := &recordingWriter{w: f}
				err := p.WriteText(w)
				if err != nil && w.err == nil {
					textErr = err
				}
				return err
			})
		})
		// The JSON's pieces: made here, written and packed by the
		// consumer, which gives each buffer back once done with it (4
		// buffers: one here, two queued, one consumed).
		pieces, free := make(chan []byte, 2), make(chan []byte, 4)
		for range cap(free) {
			free <- nil
		}
		var encErr error // set before pieces closes
		consume := func(f *os.File) error {
			k := store.NewPlanPacker(p.JSONSize())
			var writeErr error
			for b := range pieces {
				if f != nil && writeErr == nil {
					_, writeErr = f.Write(b)
				}
				_, _ = k.Write(b) // an error stays: Packed gives it
				free <- b
			}
			if r.err = encErr; r.err == nil {
				r.packed, r.err = k.Packed()
			}
			close(r.packedDone)
			return cmp.Or(r.err, writeErr)
		}
		wg.Go(func() {
			consumed := false
			if dirErr == nil {
				jsonErr = writeAtomicThen(planFile(dir, n, ".json"), func(f *os.File) error {
					consumed = true
					return consume(f)
				}, func() bool {
					<-nftDone
					return textErr == nil && nftErr == nil
				})
			}
			if !consumed { // no file: packed all the same
				_ = consume(nil)
			}
		})
		encErr = p.JSONPieces(renderPiece, func(b []byte) []byte {
			if b != nil {
				pieces <- b
			}
			if b = <-free; b == nil {
				b = make([]byte, 0, renderPiece+renderPiece/4)
			}
			return b
		})
		close(pieces)
		wg.Wait()
		switch {
		case r.err != nil:
			removePlanFiles(dir, n)
			r.filesErr = r.err
		case textErr != nil:
			r.filesErr = fmt.Errorf("render the plan: %w", textErr)
		default:
			r.filesErr = cmp.Or(dirErr, nftErr, jsonErr)
		}
	}()
	return r
}

// recordingWriter is w that keeps its first error: a script that could
// not be written is told apart from one that could not be rendered.
type recordingWriter struct {
	w   io.Writer
	err error
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// recordApplying records a generation being applied; with a confirm
// window, with its rollback and a provisional deadline, and starts its
// guard.
func recordApplying(t nft.Target, p *plan.Plan, o Options) (store.Generation, error) {
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
	g, err := o.Store.AddGeneration(g, nil) // the plan goes in with the kernel's answer
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
// starting now, and records its plan (packed; a patch of generation
// planBase's when that is not 0); a read-back that failed (readErr) is
// kept in its note. With approvals (when the read-back did not fail),
// their transaction records it and commits; if that fails, the
// generation is recorded alone, then the approvals tried on their own:
// approveErr says why they are not written (the generation is recorded
// all the same). After a failed read-back the approvals are rolled back.
func recordApplied(o Options, n uint64, readErr error, packed []byte, planBase uint64, approvals *approvalsWrite) (g store.Generation, approveErr, err error) {
	mark := func(g *store.Generation) error {
		g.PlanBase = planBase
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
	}
	if approvals == nil || readErr != nil {
		approvals.abort() // the approvals written beside the kernel's work go
		g, err = o.Store.UpdateGenerationPlan(n, packed, mark)
		return g, nil, err
	}
	if g, err = approvals.w.Commit(n, packed, mark); err == nil {
		return g, nil, nil
	}
	if g, err = o.Store.UpdateGenerationPlan(n, packed, mark); err != nil {
		return g, nil, err
	}
	return g, o.Store.WriteApprovals(approvals.get()), nil
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

// ErrNothingToConfirm means the current generation is not waiting for a
// confirmation.
var ErrNothingToConfirm = errors.New("nothing to confirm")

// Confirm keeps the pending current generation: its guard will not roll
// it back.
func Confirm(st *store.Store, t nft.Target, table string) (*store.Generation, error) {
	gens, unlock, err := lockedGenerations(st, DefaultLockWait, slog.Default())
	if err != nil {
		return nil, err
	}
	defer unlock()
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

// lockedGenerations takes the lock beside the store (waiting up to wait)
// and reads the generations; unlock lets the lock go.
func lockedGenerations(st *store.Store, wait time.Duration, log *slog.Logger) (gens []store.Generation, unlock func(), err error) {
	if unlock, err = lockApplies(context.Background(), st.Path(), wait, log); err != nil {
		return nil, nil, err
	}
	if gens, err = st.Generations(); err != nil {
		unlock()
		return nil, nil, err
	}
	return gens, unlock, nil
}

// LoadPlan reads the plan recorded with generation n (a plan stored as a
// patch is made again from the plan it patches).
func LoadPlan(st *store.Store, n uint64) (*plan.Plan, error) {
	return loadPlan(st, n, 0)
}

func loadPlan(st *store.Store, n uint64, depth int) (*plan.Plan, error) {
	data, err := st.GenerationPlan(n)
	if err != nil {
		return nil, err
	}
	p, err := decodePlan(data, depth, func(b uint64, depth int) (*plan.Plan, error) { return loadPlan(st, b, depth) })
	if err != nil {
		return nil, fmt.Errorf("decode plan of generation %d: %w", n, err)
	}
	return p, nil
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
	// Stamped with the generation whose plan it is: the next apply may be a
	// delta from it.
	if _, err := k.ApplyWith(b.plan, nft.ApplyOptions{Generation: b.gen.Effective()}); err != nil {
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
// marked rolled back. With no generation of the table recorded for the
// target, it is refused (store.ErrNoGeneration).
func Rollback(st *store.Store, k nft.Kernel, table string, o RollbackOptions) (*store.Generation, error) {
	log := orDefault(o.Logger)
	gens, unlock, err := lockedGenerations(st, lockWait(o.LockWait), log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cur := current(gens, targetKey(k.Target()), table)
	to := o.To
	if to == 0 && cur == nil {
		// Nothing was recorded here: there is no table of ours to take
		// away, and recording a removal would be untrue.
		return nil, fmt.Errorf("nothing to roll back: no generation of table inet %s was recorded in %s: %w", table, k.Target(), store.ErrNoGeneration)
	}
	if to == 0 {
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
	gens, unlock, err := lockedGenerations(st, lockWait(o.LockWait), log)
	if err != nil {
		return false, nil, err
	}
	defer unlock()
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
