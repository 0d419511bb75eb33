//go:build linux

package namecheck

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/store"
)

// RunConfig configures Run: the name check of the current generation of
// a table.
type RunConfig struct {
	Cgroup string // cgroup v2 directory whose sockets are checked
	Target nft.Target
	Table  string
	Store  *store.Store
	// Reload is how often the store is read for a new generation
	// (default 2 s).
	Reload time.Duration
	Log    *slog.Logger
	// OnEvent hears of each refused connection (optional).
	OnEvent func(Event)
	// Ready is closed once the program is attached and the current
	// generation's destinations are set (optional).
	Ready chan<- struct{}
	// OnChecker is given the checker once attached (optional: metrics).
	OnChecker func(*Checker)
	// PinRoot, when set (a directory on a bpf file system), pins the
	// check there, under the table's and namespace's directory: if Run
	// dies, the check stays attached with its last destinations, and the
	// next Run takes it over. A clean stop (ctx done) detaches it. It
	// also shares the DNS follower's view of the addresses it opens
	// (Config.FollowPinDir): without PinRoot, those are not name-checked.
	PinRoot string
	// Record, when set, writes the refusals to Store (for "denied")
	// every Flush (default 5 s) and at the end.
	Record bool
	Flush  time.Duration
}

// Dests converts a plan's name checks for the kernel.
func Dests(checks []plan.NameChecked) []Dest {
	out := make([]Dest, 0, len(checks))
	for _, c := range checks {
		m := Audit
		if c.Mode == plan.NameCheckEnforce {
			m = Enforce
		}
		out = append(out, Dest{UID: c.UID, IP: c.IP, Proto: c.Proto, Port: c.Port, Mode: m, Names: c.Names, Followed: c.Followed})
	}
	return out
}

// Run attaches the name check and keeps it to the name checks of the
// table's current generation until ctx ends; then it detaches (names are
// no longer checked; addresses still are, by the table).
func Run(ctx context.Context, cfg RunConfig) error {
	if cfg.Reload <= 0 {
		cfg.Reload = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cookie, err := follow.EnforcedNetns(cfg.Target)
	if err != nil {
		return err
	}
	ccfg := Config{Cgroup: cfg.Cgroup, NetnsCookie: cookie, Log: cfg.Log}
	if cfg.PinRoot != "" {
		if _, err := follow.PinDir(cfg.PinRoot, cfg.Table, cookie); err != nil { // checks the file system
			return err
		}
		ccfg.PinDir = PinDirOf(cfg.PinRoot, cfg.Table, cookie)
		ccfg.FollowPinDir = follow.PinPath(cfg.PinRoot, cfg.Table, cookie)
		if err := os.MkdirAll(ccfg.PinDir, 0o700); err != nil {
			return fmt.Errorf("create the name check's pin directory: %w", err)
		}
	}
	c, err := Start(ccfg)
	if err != nil {
		return err
	}
	var events, recording sync.WaitGroup
	rec, stop := newRecorder(), make(chan struct{})
	defer func() {
		if err := c.Detach(); err != nil { // no more events
			cfg.Log.Error("name check: detach", "err", err)
		}
		events.Wait()
		close(stop) // the last refusals are written
		recording.Wait()
		cfg.Log.Warn("name check detached: names are no longer checked", "cgroup", cfg.Cgroup)
	}()
	if cfg.Record {
		if cfg.Flush <= 0 {
			cfg.Flush = 5 * time.Second
		}
		recording.Go(func() { rec.loop(cfg.Store, cfg.Flush, cfg.Log, stop) })
	}
	events.Go(func() {
		err := c.Events(func(e Event) {
			logEvent(cfg.Log, e)
			if cfg.Record {
				rec.add(e, time.Now())
			}
			call(cfg.OnEvent, e)
		})
		if err != nil {
			cfg.Log.Error("name check events", "err", err)
		}
	})
	if cfg.OnChecker != nil {
		cfg.OnChecker(c)
	}
	var gen uint64 = ^uint64(0)
	var said time.Time // when checkFollowed last said the followed map was replaced
	tick := time.NewTicker(cfg.Reload)
	defer tick.Stop()
	for first := true; ; first = false {
		if err := sync1(c, &cfg, &gen); err != nil {
			if first {
				return err
			}
			cfg.Log.Error("name check: read the current generation (the previous checks stay)", "err", err)
		}
		if first && cfg.Ready != nil {
			close(cfg.Ready)
		}
		checkFollowed(c, cfg.Log, &said)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// followedSayEvery is how often a name check whose followed map was
// replaced says so again.
const followedSayEvery = time.Minute

// checkFollowed says loudly, when it starts and again every
// followedSayEvery, that the follower's pinned map of followed
// destinations is no longer the one the check reads: a follower (of
// another version, or after the pin was removed) opens addresses the
// check does not see. The check goes on checking the rest; a restart of
// namecheck takes the new map.
func checkFollowed(c *Checker, log *slog.Logger, said *time.Time) {
	replaced, pin, err := c.followedReplaced()
	switch {
	case err != nil:
		log.Error("name check: read the follower's pinned destinations", "err", err)
	case !replaced:
		if !said.IsZero() {
			log.Info("name check: the follower's followed destinations are the check's again", "pin", pin)
		}
		*said = time.Time{}
	case time.Since(*said) >= followedSayEvery:
		log.Error("name check: the follower's map of followed destinations was replaced: the addresses the follower opens now are NOT name-checked; restart namecheck to check them",
			"pin", pin)
		*said = time.Now()
	}
}

func call(fn func(Event), e Event) {
	if fn != nil {
		fn(e)
	}
}

func logEvent(log *slog.Logger, e Event) {
	what := "name check: refused (audit: passed)"
	if e.Enforced {
		what = "name check: refused (dropped)"
	}
	log.Warn(what, "uid", e.UID, "dest", fmt.Sprintf("%s %s", plan.ProtoName(e.Proto), netipPort(e)), "presented", e.Name,
		"verdict", e.Verdict, "kind", e.Kind)
}

// sync1 sets the checks of the current generation when it changed.
func sync1(c *Checker, cfg *RunConfig, gen *uint64) error {
	g, err := rollout.Current(cfg.Store, cfg.Target, cfg.Table)
	if err != nil {
		return err
	}
	n := uint64(0)
	if g != nil {
		n = g.Effective()
	}
	if n == *gen {
		return nil
	}
	var checks, followed []plan.NameChecked
	if g != nil && g.Mode != rollout.ModeRemoved {
		p, err := rollout.LoadPlan(cfg.Store, n)
		if err != nil {
			return err
		}
		checks, followed = p.NameChecks(), p.FollowNameChecks()
	}
	if err := c.Set(Dests(append(checks, followed...))); err != nil {
		return err // tried again at the next reload
	}
	*gen = n
	cfg.Log.Info("name check: destinations set", "generation", n, "destinations", len(checks), "followed_rules", len(followed))
	return nil
}
