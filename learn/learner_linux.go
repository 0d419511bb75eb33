//go:build linux

package learn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/egresskit/egress/store"
)

// Config is what a learning run needs.
type Config struct {
	DB       string        // store file, created when missing
	Cgroup   string        // cgroup v2 directory to attach to
	Duration time.Duration // 0: until ctx ends
	// Flush is the interval between commits to the store.
	Flush time.Duration
	// Drain is the interval between reads of the kernel's flow counts.
	Drain  time.Duration
	Filter Filter
	Probe  ProbeOptions
	// Status, when set (a terminal), gets a live status line every second.
	Status io.Writer
	// SummaryEvery is the interval of the summary log line when Status is
	// not set.
	SummaryEvery time.Duration
	Log          *slog.Logger
}

func (c *Config) defaults() {
	if c.Flush <= 0 {
		c.Flush = 5 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = time.Second
	}
	if c.Drain > c.Flush {
		c.Drain = c.Flush
	}
	if c.SummaryEvery <= 0 {
		c.SummaryEvery = time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Summary is the outcome of a learning run.
type Summary struct {
	Run    store.Run
	Status Status
	Probe  ProbeStats
}

// Run attaches the probe to cfg.Cgroup and records until cfg.Duration
// elapses or ctx ends, then flushes and detaches.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	cfg.defaults()
	st, err := store.Create(cfg.DB, store.Options{LockTimeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	known, err := st.Flows()
	if err != nil {
		return nil, err
	}
	keys := make([]store.FlowKey, len(known))
	for i, f := range known {
		keys[i] = f.FlowKey
	}
	known = nil

	mount, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	probe, err := OpenProbe(cfg.Cgroup, cfg.Probe)
	if err != nil {
		return nil, err
	}
	defer probe.Close()

	agg := newAggregator(cfg.Filter, newCgroupNames(mount).Name, keys)
	start := time.Now()
	run, err := st.BeginRun(store.Run{Start: start.UTC(), End: start.UTC(), Cgroup: cfg.Cgroup})
	if err != nil {
		return nil, err
	}
	cfg.Log.Info("learning", "cgroup", cfg.Cgroup, "db", cfg.DB, "run", run.ID, "known_flows", len(keys), "duration", cfg.Duration)

	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	l := &learner{cfg: cfg, st: st, probe: probe, agg: agg, run: run, start: start}
	var g errgroup.Group
	g.Go(func() error { return probe.ReadEvents(func(Attempt) {}, agg.add) })
	g.Go(func() error { return probe.ReadDNS(agg.addDNS) })
	loopErr := l.loop(ctx)

	// Stop: what the kernel still holds, then a last flush that may wait
	// longer for the lock.
	probe.Flush()
	_ = l.drain()
	closeErr := probe.Close()
	readErr := g.Wait()
	l.run.Finished = true
	st2, err := store.Create(cfg.DB, store.Options{LockTimeout: 30 * time.Second})
	if err == nil {
		l.st = st2
		err = l.flush()
	}
	if l.status != nil {
		fmt.Fprintln(l.status)
	}
	sum := &Summary{Run: l.run, Status: l.refresh(time.Now()), Probe: l.stats}
	return sum, errors.Join(loopErr, readErr, closeErr, err)
}

type learner struct {
	cfg    Config
	st     *store.Store
	probe  *Probe
	agg    *aggregator
	run    store.Run
	start  time.Time
	status io.Writer

	stats      ProbeStats
	lastStatus Status
	lastEvents uint64
	lastTick   time.Time
}

func (l *learner) loop(ctx context.Context) error {
	drain := time.NewTicker(l.cfg.Drain)
	defer drain.Stop()
	flush := time.NewTicker(l.cfg.Flush)
	defer flush.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	summary := time.NewTicker(l.cfg.SummaryEvery)
	defer summary.Stop()
	l.status = l.cfg.Status
	l.lastTick = l.start
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-drain.C:
			if err := l.drain(); err != nil {
				return err
			}
		case <-flush.C:
			if err := l.flush(); err != nil {
				if errors.Is(err, store.ErrBusy) {
					l.cfg.Log.Warn("store busy, keeping the batch for the next flush", "err", err)
					continue
				}
				return err
			}
		case now := <-tick.C:
			s := l.refresh(now)
			if l.status != nil {
				fmt.Fprintf(l.status, "\r\033[K%s", s.Line())
			}
		case <-summary.C:
			if l.status == nil {
				s := l.lastStatus
				l.cfg.Log.Info("learning", "elapsed", s.Elapsed.Round(time.Second), "events", s.Events,
					"events_per_sec", int(s.EventsPerSec), "flows", s.Flows, "new_last_minute", s.NewLastMinute,
					"since_last_new", s.SinceLastNew.Round(time.Second), "lost", s.Lost, "dns_answers", s.DNSAnswers)
			}
		}
	}
}

func (l *learner) drain() error {
	return l.probe.Drain(l.agg.add)
}

func (l *learner) refresh(now time.Time) Status {
	if st, err := l.probe.Stats(); err == nil {
		l.stats = st
	}
	s := l.agg.status(now)
	s.Elapsed = now.Sub(l.start)
	s.Lost = l.stats.Lost() + l.stats.DNSLost
	if dt := now.Sub(l.lastTick).Seconds(); dt > 0 {
		s.EventsPerSec = float64(s.Events-l.lastEvents) / dt
	}
	l.lastEvents, l.lastTick = s.Events, now
	l.lastStatus = s
	return s
}

func (l *learner) flush() error {
	now := time.Now()
	if st, err := l.probe.Stats(); err == nil {
		l.stats = st
	}
	s := l.agg.status(now)
	b := l.agg.take()
	l.run.End = now.UTC()
	l.run.Events = s.Events
	l.run.LostEvents = l.stats.Lost()
	l.run.DNSAnswers = s.DNSAnswers
	l.run.DNSLost = l.stats.DNSLost + l.stats.DNSErrors
	run := l.run
	b.Run = &run
	if err := l.st.Apply(b); err != nil {
		l.agg.giveBack(b)
		return err
	}
	return nil
}
