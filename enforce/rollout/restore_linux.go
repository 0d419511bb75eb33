//go:build linux

package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// Boot policies: what restore does when it has no generation to put back.
const (
	BootOpen   = "open"   // nothing: the host's egress stays open
	BootClosed = "closed" // the minimal table of plan.ClosedPlan
)

// What a restore did (RestoreResult.Action).
const (
	RestoreRestored = "restored" // a kept generation is back
	RestoreRemoved  = "removed"  // the kept generation is a removal: no table
	RestoreOpen     = "open"     // boot_policy open: no table
	RestoreClosed   = "closed"   // boot_policy closed: the minimal table
)

// RestoreOptions say what to restore.
type RestoreOptions struct {
	DB     string // the store; the lock and the applied files are beside it
	Kernel nft.Kernel
	Table  string
	// Force puts back a table that fails the pre-apply check.
	Force bool
	// BootPolicy (BootOpen or BootClosed) decides when there is no kept
	// generation, or its table cannot or may not be put back.
	BootPolicy string
	Closed     *plan.Plan // the table of boot_policy closed (plan.ClosedPlan)
	Command    string
	LockWait   time.Duration
	Logger     *slog.Logger
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	Action string `json:"action"`
	// Generation is the one recorded for this restore (0: none).
	Generation uint64 `json:"generation,omitempty"`
	// Restores is the kept generation whose table is back.
	Restores uint64 `json:"restores,omitempty"`
	Mode     string `json:"mode,omitempty"`
	Elements int    `json:"elements"`
	// RolledBack lists the pending generations restore found without a
	// guard and marked rolled back (not confirmed before restart).
	RolledBack []uint64 `json:"rolled_back,omitempty"`
	// FromFiles is the folder restore read, when the store could not be.
	FromFiles string        `json:"from_files,omitempty"`
	Took      time.Duration `json:"took_ns"`
}

type restorer struct {
	o   RestoreOptions
	log *slog.Logger
	res *RestoreResult
}

// Restore puts the current generation of the target and table back, as at
// boot: the newest kept one (applied, or confirmed in time). A pending
// generation whose guard is gone counts as not confirmed: it is marked
// rolled back and the kept one before it is put back. When the store
// cannot be read, the files beside it (written at every apply) say what to
// put back. Before a table that drops traffic goes back, the pre-apply
// check runs (Force skips it). With nothing to put back, or a table that
// may not or cannot go back, BootPolicy decides. Every failure is logged
// at error level and returned, also when the safer state is in place.
func Restore(o RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	r := &restorer{o: o, log: orDefault(o.Logger), res: &RestoreResult{}}
	unlock, err := lockApplies(context.Background(), o.DB, lockWait(o.LockWait), r.log)
	if err != nil {
		// At boot no apply runs: restoring matters more than the order.
		r.log.Error("restoring without the lock", "err", err)
	} else {
		defer unlock()
	}
	err = r.run()
	r.res.Took = time.Since(start)
	return r.res, err
}

func (r *restorer) run() error {
	st, gens, storeErr := r.openStore()
	if storeErr == nil {
		return r.fromStore(st, gens)
	}
	dir := AppliedDir(r.o.DB, targetKey(r.o.Kernel.Target()), r.o.Table)
	state, ferr := ReadApplied(dir)
	if errors.Is(storeErr, store.ErrNotExist) && isNotExist(ferr) {
		return r.bootPolicy(nil, "no generation to restore (there is no store "+r.o.DB+")")
	}
	r.log.Error("the store cannot be read: restoring from the files beside it", "store", r.o.DB, "err", storeErr, "files", dir)
	storeErr = fmt.Errorf("the store cannot be read: %w", storeErr)
	if ferr != nil {
		return errors.Join(storeErr, ferr, r.bootPolicy(nil, "neither the store nor the files beside it can be read"))
	}
	return errors.Join(storeErr, r.fromFiles(dir, state))
}

// openStore opens an existing store for writing (migrated), and reads the
// generations.
func (r *restorer) openStore() (*store.Store, []store.Generation, error) {
	if _, err := os.Stat(r.o.DB); err != nil {
		if isNotExist(err) {
			return nil, nil, fmt.Errorf("open store %s: %w", r.o.DB, store.ErrNotExist)
		}
		return nil, nil, err
	}
	st, err := store.Create(r.o.DB, store.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	gens, err := st.Generations()
	return st, gens, err
}

func (r *restorer) fromStore(st *store.Store, gens []store.Generation) error {
	t, table := r.o.Kernel.Target(), r.o.Table
	if err := r.settle(st, gens); err != nil {
		return err
	}
	gens, err := st.Generations()
	if err != nil {
		return err
	}
	k := kept(gens, targetKey(t), table, 0)
	if k == nil {
		return r.bootPolicy(st, fmt.Sprintf("no kept generation of table inet %s in %s", table, t))
	}
	b, err := resolveBack(st, gens, t, table, k.N)
	if err != nil {
		r.log.Error(fmt.Sprintf("generation %d cannot be restored", k.N), "err", err)
		return errors.Join(err, r.bootPolicy(st, fmt.Sprintf("generation %d cannot be restored", k.N)))
	}
	if err := r.put(b); err != nil {
		return errors.Join(err, r.bootPolicy(st, fmt.Sprintf("generation %d was not restored", k.N)))
	}
	if r.res.Action == RestoreRemoved {
		return nil
	}
	reason := fmt.Sprintf("restore of generation %d", k.N)
	if len(r.res.RolledBack) > 0 {
		reason += fmt.Sprintf(" (generation %d was pending: not confirmed before restart)", r.res.RolledBack[len(r.res.RolledBack)-1])
	}
	g, err := b.record(st, t, table, r.o.Command, reason)
	if err != nil {
		r.log.Error("the table is restored, but the store does not record it", "err", err)
		return err
	}
	r.res.Generation = g.N
	b.sync(st, t, table, g, r.log)
	return nil
}

// settle ends the unfinished generations: a pending one without its guard
// is rolled back (not confirmed before restart); one with a live guard
// stops the restore.
func (r *restorer) settle(st *store.Store, gens []store.Generation) error {
	for i := range gens {
		g := &gens[i]
		if !ours(g, targetKey(r.o.Kernel.Target()), r.o.Table) || !pendingish(g) {
			continue
		}
		if g.Deadline.IsZero() {
			if err := markInterrupted(st, g.N); err != nil {
				return err
			}
			continue
		}
		if guardAlive(g) {
			return fmt.Errorf("%w: generation %d is %s and its guard (pid %d) is running: confirm it or roll it back; restore puts back only a kept generation",
				ErrPending, g.N, g.State, g.GuardPID)
		}
		note := fmt.Sprintf("not confirmed before restart: its guard (pid %d) is gone", g.GuardPID)
		if err := markRolledBack(st, g.N, note); err != nil && !errors.Is(err, errResolved) {
			return err
		}
		r.log.Warn(fmt.Sprintf("generation %d was %s: %s; it is rolled back", g.N, g.State, note))
		r.res.RolledBack = append(r.res.RolledBack, g.N)
	}
	return nil
}

// put applies kept generation b (a nil plan: removes the table), after
// the pre-apply check.
func (r *restorer) put(b backTo) error {
	n := b.n()
	r.res.Restores, r.res.Mode = n, b.gen.Mode
	if err := b.check(r.o.Force, r.log); err != nil {
		r.log.Error(fmt.Sprintf("generation %d is NOT restored: the pre-apply check refuses its table", n), "err", err)
		return fmt.Errorf("restore generation %d: %w (restore --force puts it back anyway)", n, err)
	}
	if err := b.apply(r.o.Kernel, r.o.Table); err != nil {
		if b.plan != nil {
			r.log.Error(fmt.Sprintf("generation %d is NOT restored", n), "err", errors.Unwrap(err))
		}
		return err
	}
	if b.plan == nil {
		r.res.Action = RestoreRemoved
		r.log.Warn(fmt.Sprintf("generation %d removed the table: nothing to restore; the host's egress is open", n))
		return nil
	}
	r.res.Action, r.res.Elements = RestoreRestored, b.plan.Elements()
	return nil
}

// fromFiles restores what the files beside the store name; nothing is
// recorded (the store cannot be read).
func (r *restorer) fromFiles(dir string, s *AppliedState) error {
	r.res.FromFiles = dir
	a := s.Restorable()
	if c := s.Current; c != nil && c != a {
		r.log.Error(fmt.Sprintf("generation %d was %s when the files were written: it counts as not confirmed", c.N, c.State))
	}
	if a == nil {
		return r.bootPolicy(nil, "the files beside the store name no kept generation")
	}
	b := backTo{gen: &store.Generation{N: a.N, Mode: a.Mode}}
	if a.Plan != 0 {
		var err error
		if b.plan, err = readAppliedPlan(dir, a.Plan); err != nil {
			r.log.Error(fmt.Sprintf("generation %d cannot be restored", a.N), "err", err)
			return errors.Join(err, r.bootPolicy(nil, fmt.Sprintf("generation %d cannot be restored", a.N)))
		}
	}
	if err := r.put(b); err != nil {
		return errors.Join(err, r.bootPolicy(nil, fmt.Sprintf("generation %d was not restored", a.N)))
	}
	return nil
}

// bootPolicy does what boot_policy says, and records the closed table when
// the store can be written.
func (r *restorer) bootPolicy(st *store.Store, why string) error {
	r.res.Restores, r.res.Elements = 0, 0
	if r.o.BootPolicy != BootClosed || r.o.Closed == nil {
		r.res.Action, r.res.Mode = RestoreOpen, ""
		r.log.Warn(why + ": boot_policy open: no table, the host's egress is open")
		return nil
	}
	p := r.o.Closed
	if _, err := r.o.Kernel.Apply(p); err != nil {
		r.res.Action = RestoreOpen
		r.log.Error(why+": boot_policy closed, but the minimal table was NOT applied: the host's egress is open", "err", err)
		return fmt.Errorf("apply the boot_policy closed table: %w", err)
	}
	r.res.Action, r.res.Mode = RestoreClosed, ModeClosed
	r.log.Warn(why + ": boot_policy closed: applied the minimal table (DNS, NTP, loopback; the rest is dropped and logged)")
	if st == nil {
		return nil
	}
	planJSON, err := json.Marshal(p)
	if err != nil {
		return err
	}
	g := generationOf(p, r.o.Kernel.Target(), r.o.Command, "boot_policy closed: "+why)
	g.Mode, g.State = ModeClosed, store.GenApplied
	if g, err = st.AddGeneration(g, planJSON); err != nil {
		r.log.Error("the closed table is applied, but the store does not record it", "err", err)
		return err
	}
	r.res.Generation = g.N
	if err := syncApplied(st, r.o.Kernel.Target(), r.o.Table, knownPlan{n: g.N, plan: p, raw: planJSON}); err != nil {
		r.log.Error("generation "+strconv.FormatUint(g.N, 10)+": the files restore falls back on are not written", "err", err)
	}
	return nil
}
