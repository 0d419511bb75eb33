//go:build linux

package rollout

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/store"
)

// GuardOptions tune a rollback guard.
type GuardOptions struct {
	// MaxDeniedRate rolls back before the deadline when the default rule
	// drops more packets per second (0: off).
	MaxDeniedRate float64
	Poll          time.Duration // default 500 ms
	// MaxBackoff caps the wait between two tries of a store or kernel
	// access that failed (default 5 s; the first wait is 100 ms).
	MaxBackoff time.Duration
	// StoreLockTimeout bounds one wait for the store's file lock before
	// the access is logged as failed and tried again (default 2 s).
	StoreLockTimeout time.Duration
	// Ready, when set, is called once the guard has the generation and its
	// rollback in memory: from then on it can roll back without reading
	// anything but the generation's state.
	Ready  func()
	Logger *slog.Logger
}

// errNotDue: the deadline moved (the table went in after the guard read
// the provisional one).
var errNotDue = errors.New("the deadline has not passed")

// guard watches one pending generation.
type guard struct {
	db  string
	k   nft.Kernel
	n   uint64
	o   GuardOptions
	log *slog.Logger
	st  *store.Store

	gen  store.Generation // as last read
	back backTo           // the rollback, loaded when the guard starts

	lastDrops uint64
	lastAt    time.Time
}

// GuardGeneration watches pending generation n of the store db until it
// is confirmed (any state other than pending), or its deadline passes (or
// the drop rate exceeds the limit), and then rolls it back. It is the body
// of the detached guard process.
//
// It does not give up: it loads the rollback plan into memory when it
// starts, and retries every store and kernel access that fails, with
// backoff, logging each failure at error level, until the rollback is in.
// It returns early only when ctx ends or the namespace is gone.
func GuardGeneration(ctx context.Context, db string, k nft.Kernel, n uint64, o GuardOptions) error {
	if o.Poll == 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.StoreLockTimeout == 0 {
		o.StoreLockTimeout = 2 * time.Second
	}
	gd := &guard{db: db, k: k, n: n, o: o, log: orDefault(o.Logger).With("generation", n)}
	if err := gd.start(ctx); err != nil {
		return err
	}
	if o.Ready != nil {
		o.Ready()
	}
	return gd.watch(ctx)
}

type backoff struct{ next, max time.Duration }

func newBackoff(max time.Duration) *backoff { return &backoff{next: 100 * time.Millisecond, max: max} }

func (b *backoff) wait(ctx context.Context) error {
	d := b.next
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// failed logs a failed access at error level, then waits before the next
// try.
func (gd *guard) failed(ctx context.Context, b *backoff, what string, err error) error {
	gd.log.Error(what+" failed; retrying", "err", err, "retry_in", b.next)
	if werr := b.wait(ctx); werr != nil {
		gd.log.Error("stopped before the generation was confirmed or rolled back: \"egress-enforce restore\" rolls it back", "err", werr)
		return werr
	}
	return nil
}

// start reads the generation and loads the rollback into memory.
func (gd *guard) start(ctx context.Context) error {
	b := newBackoff(gd.o.MaxBackoff)
	for {
		err := gd.load()
		if err == nil {
			return nil
		}
		if errors.Is(err, store.ErrNoGeneration) && gd.gen.N == 0 {
			gd.log.Error("nothing to guard", "err", err)
			return err
		}
		if err := gd.failed(ctx, b, "load the generation and its rollback", err); err != nil {
			return err
		}
	}
}

func (gd *guard) load() error {
	if gd.st == nil {
		st, err := store.Open(gd.db, store.Options{LockTimeout: gd.o.StoreLockTimeout})
		if err != nil {
			return err
		}
		gd.st = st
	}
	gens, err := gd.refresh()
	if err != nil || !pendingish(&gd.gen) {
		return err
	}
	g := &gd.gen
	to := rollbackTarget(gens, g)
	if gd.back, err = resolveBack(gd.st, gens, gd.k.Target(), g.Table, to); err != nil {
		return err
	}
	gd.log.Info("guarding", "deadline", g.Deadline, "rollback_to", to, "netns", gd.k.Target().Netns, "table", g.Table,
		"max_denied_rate", gd.o.MaxDeniedRate)
	return nil
}

func (gd *guard) watch(ctx context.Context) error {
	b := newBackoff(gd.o.MaxBackoff)
	tick := time.NewTicker(gd.o.Poll)
	defer tick.Stop()
	for {
		_, err := gd.refresh()
		if err == nil && !pendingish(&gd.gen) {
			gd.log.Info(fmt.Sprintf("generation %d is %s: nothing to roll back", gd.n, gd.gen.State))
			return nil
		}
		// When the store cannot be read, the deadline known so far still
		// counts: the rollback waits for the store to decide.
		if why, byDeadline := gd.why(err == nil); why != "" {
			done, rerr := gd.rollback(ctx, why, byDeadline)
			if done || rerr != nil {
				return rerr
			}
			continue
		}
		if err != nil {
			if err := gd.failed(ctx, b, "read the generation's state", err); err != nil {
				return err
			}
			continue
		}
		b = newBackoff(gd.o.MaxBackoff)
		select {
		case <-ctx.Done():
			gd.log.Error("stopped before the generation was confirmed or rolled back: \"egress-enforce restore\" rolls it back", "err", ctx.Err())
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// refresh reads the generations and the guarded one's state.
func (gd *guard) refresh() ([]store.Generation, error) {
	gens, err := gd.st.Generations()
	if err != nil {
		return nil, err
	}
	g := find(gens, gd.n)
	if g == nil {
		return nil, fmt.Errorf("generation %d: %w", gd.n, store.ErrNoGeneration)
	}
	gd.gen = *g
	return gens, nil
}

// why says why to roll back now ("" for not yet), and whether it is the
// deadline.
func (gd *guard) why(fresh bool) (string, bool) {
	g, now := &gd.gen, time.Now()
	if !now.Before(g.Deadline) {
		within := g.ConfirmWithin
		if within == 0 {
			within = g.Deadline.Sub(g.Time)
		}
		return fmt.Sprintf("not confirmed within %s", within.Round(time.Second)), true
	}
	if gd.o.MaxDeniedRate <= 0 || g.State != store.GenPending || !fresh {
		return "", false
	}
	s, err := gd.k.Status(g.Table, false)
	if err != nil {
		gd.log.Error("read the drop counter failed", "err", err)
		return "", false
	}
	if !s.Present {
		return "", false
	}
	defer func() { gd.lastDrops, gd.lastAt = s.Dropped.Packets, now }()
	if !gd.lastAt.IsZero() && s.Dropped.Packets >= gd.lastDrops {
		rate := float64(s.Dropped.Packets-gd.lastDrops) / now.Sub(gd.lastAt).Seconds()
		if rate > gd.o.MaxDeniedRate {
			return fmt.Sprintf("%.1f dropped packets/s, above --rollback-if-denied-rate %g/s", rate, gd.o.MaxDeniedRate), false
		}
	}
	return "", false
}

// rollback takes the lock, marks the generation rolled back, puts the
// rollback in the kernel and records it, each step retried until it
// succeeds. done is false when the deadline turned out to have moved.
func (gd *guard) rollback(ctx context.Context, why string, byDeadline bool) (done bool, err error) {
	unlock, err := lockApplies(ctx, gd.db, -1, gd.log)
	if err != nil {
		gd.log.Error("stopped before the rollback", "err", err)
		return true, err
	}
	defer unlock()
	b := newBackoff(gd.o.MaxBackoff)
	for {
		err := gd.markRolledBack(why, byDeadline)
		switch {
		case err == nil:
		case errors.Is(err, errResolved):
			gd.log.Info("not rolling back: " + err.Error())
			return true, nil
		case errors.Is(err, errNotDue):
			return false, nil
		default:
			if err := gd.failed(ctx, b, "record the rollback", err); err != nil {
				return true, err
			}
			continue
		}
		break
	}
	gd.log.Info("rolling back: "+why, "to", gd.back.n())
	for b = newBackoff(gd.o.MaxBackoff); ; {
		err := gd.back.apply(gd.k, gd.gen.Table)
		if err == nil {
			break
		}
		if p := gd.k.Target().Path(); p != "" {
			if _, serr := os.Stat(p); errors.Is(serr, fs.ErrNotExist) {
				gd.log.Error("the network namespace is gone: nothing to roll back", "netns", p, "err", err)
				return true, err
			}
		}
		if err := gd.failed(ctx, b, "put the rollback in the kernel", err); err != nil {
			return true, err
		}
	}
	reason := fmt.Sprintf("automatic rollback of generation %d: %s", gd.n, why)
	var r store.Generation
	for b = newBackoff(gd.o.MaxBackoff); ; {
		r, err = gd.back.record(gd.st, gd.k.Target(), gd.gen.Table, "rollback guard", reason)
		if err == nil {
			gd.log.Info("rolled back", "restored", gd.back.n(), "as", r.N)
			break
		}
		if err := gd.failed(ctx, b, "record the restored generation (the kernel has it)", err); err != nil {
			return true, err
		}
	}
	if err := syncApplied(gd.st, gd.k.Target(), gd.gen.Table, knownPlan{n: r.Effective(), plan: gd.back.plan}); err != nil {
		gd.log.Error("the files restore falls back on are not written", "err", err)
	}
	return true, nil
}

// markRolledBack changes the state in one transaction, unless confirm came
// first (errResolved) or the deadline moved (errNotDue).
func (gd *guard) markRolledBack(why string, byDeadline bool) error {
	_, err := gd.st.UpdateGeneration(gd.n, func(cur *store.Generation) error {
		if !pendingish(cur) {
			return fmt.Errorf("%w: generation %d is %s", errResolved, cur.N, cur.State)
		}
		if byDeadline && cur.State == store.GenPending && time.Now().Before(cur.Deadline) {
			gd.gen = *cur
			return errNotDue
		}
		cur.State, cur.Note = store.GenRolledBack, "rolled back automatically: "+why
		return nil
	})
	return err
}
