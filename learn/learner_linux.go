//go:build linux

package learn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/namecheck"
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
	// Resolvers are the UIDs of the local resolvers (systemd-resolved,
	// nscd, dnsmasq...) that ask on behalf of other users' processes: a
	// flow whose user resolved nothing for its address takes the names of
	// their answers, and of nobody else's.
	Resolvers []uint32
	Probe     ProbeOptions
	// Status, when set (a terminal), gets a live status line every second.
	Status io.Writer
	// SummaryEvery is the interval of the summary log line when Status is
	// not set.
	SummaryEvery time.Duration
	Log          *slog.Logger
	// Metrics, when set, gets the run's figures as Prometheus metrics.
	Metrics prometheus.Registerer
	// NoPresentedNames leaves out the names connections present on their
	// first data (TLS SNI, HTTP Host); by default the learner attaches the
	// name check in its learning mode and records them per flow.
	NoPresentedNames bool
	// Ready, when set, is called once the programs are attached and their
	// readers run: every connection attempt and DNS message of the cgroup
	// from then on is recorded. The "learning" log line comes at the same
	// point.
	Ready func()
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
	keys, err := st.FlowKeys()
	if err != nil {
		return nil, err
	}

	mount, err := cgroupbpf.Mount()
	if err != nil {
		return nil, err
	}
	nc := loadNames(cfg)
	popts := cfg.Probe
	if nc != nil {
		popts.Names = nc.Program()
		defer func() {
			if nc != nil { // not closed at the stop: an error before it
				nc.Close()
			}
		}()
	}
	probe, err := OpenProbe(cfg.Cgroup, popts)
	if err != nil {
		return nil, err
	}
	defer probe.Close()

	agg := newAggregator(cfg.Filter, cgroupbpf.NewNames(mount).Name, keys)
	start := time.Now()
	run, err := st.BeginRun(store.Run{Start: start.UTC(), End: start.UTC(), Cgroup: cfg.Cgroup})
	if err != nil {
		return nil, err
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	l := &learner{cfg: cfg, st: st, probe: probe, agg: agg, run: run, start: start, status: cfg.Status}
	if cfg.Metrics != nil {
		c := metricsCollector{l}
		if err := cfg.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
		defer cfg.Metrics.Unregister(c)
	}
	var readers errgroup.Group
	readers.Go(func() error { return probe.ReadEvents(func(Attempt) {}, agg.add) })
	readers.Go(func() error { return probe.ReadDNS(agg.addDNS) })
	l.startNames(&readers, nc)
	cfg.Log.Info("learning", "cgroup", cfg.Cgroup, "db", cfg.DB, "run", run.ID, "known_flows", len(keys), "duration", cfg.Duration, "dns_resolvers", cfg.Resolvers)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	flushReq, flushErr, flusherDone := l.startFlusher(st)
	loopErr := l.loop(ctx, flushReq, flushErr)

	// Stop: detach, so nothing new arrives; let the readers deliver what
	// the rings hold; drain the flow map; then a last flush that may wait
	// longer for the lock.
	detachErr := probe.Detach()
	if nc != nil {
		detachErr = errors.Join(detachErr, nc.Close())
		nc = nil
	}
	probe.StopReaders()
	readErr := readers.Wait()
	drainErr := l.drain()
	close(flushReq)
	<-flusherDone
	l.stats, _ = probe.Stats()
	l.run.Finished = true
	err = l.flush(st.WithLockTimeout(30 * time.Second))
	closeErr := probe.Close()
	if l.status != nil {
		fmt.Fprintln(l.status)
	}
	sum := &Summary{Run: l.run, Status: l.refresh(time.Now()), Probe: l.stats}
	return sum, errors.Join(loopErr, detachErr, readErr, drainErr, err, closeErr)
}

// loadNames loads the name check in its learning mode, without attaching
// it: the probe's egress program runs it by a tail call (not a second
// program on the hook), from the moment the probe is attached. Each name
// a connection presents is recorded with its flow. A learner that cannot
// load it says so and learns without the names (nil).
func loadNames(cfg Config) *namecheck.Checker {
	if cfg.NoPresentedNames {
		return nil
	}
	c, err := namecheck.Start(namecheck.Config{Cgroup: cfg.Cgroup, Learn: true, NoAttach: true})
	if err != nil {
		cfg.Log.Warn("learning without the names connections present (TLS SNI, HTTP Host)", "err", err)
		return nil
	}
	return c
}

// startNames reads the names the name check c (nil: none) tells.
func (l *learner) startNames(readers *errgroup.Group, c *namecheck.Checker) {
	if c == nil {
		return
	}
	readers.Go(func() error {
		return c.Events(func(e namecheck.Event) {
			if e.Verdict == "seen" {
				l.agg.addPresented(e.UID, e.Proto, e.IP, e.Port, e.Name, time.Now())
			}
		})
	})
}

type learner struct {
	cfg    Config
	st     *store.Store
	probe  *Probe
	agg    *aggregator
	start  time.Time
	status io.Writer

	run store.Run // written by the flusher only

	// Owned by the loop.
	stats      ProbeStats
	lastStatus Status
	lastEvents uint64
	lastTick   time.Time
}

// startFlusher runs flushes beside the loop, so a long one does not hold
// up the draining of the kernel's flow map. Closing req stops it; done is
// closed when it has stopped.
func (l *learner) startFlusher(st *store.Store) (req chan struct{}, errc chan error, done chan struct{}) {
	req, errc, done = make(chan struct{}, 1), make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		for range req {
			err := l.flush(st)
			if errors.Is(err, store.ErrBusy) {
				l.cfg.Log.Warn("store busy, keeping the batch for the next flush", "err", err)
				continue
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	return req, errc, done
}

func (l *learner) loop(ctx context.Context, flushReq chan<- struct{}, flushErr <-chan error) error {
	drain := time.NewTicker(l.cfg.Drain)
	defer drain.Stop()
	flush := time.NewTicker(l.cfg.Flush)
	defer flush.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	summary := time.NewTicker(l.cfg.SummaryEvery)
	defer summary.Stop()
	l.lastTick = l.start
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-flushErr:
			return err
		case <-drain.C:
			if err := l.drain(); err != nil {
				return err
			}
		case <-flush.C:
			select {
			case flushReq <- struct{}{}:
			default: // a flush is still running
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
					"since_last_new", s.SinceLastNew.Round(time.Second), "lost", s.Lost, "dns_answers", s.DNSAnswers,
					"dns_ignored", s.DNSIgnored)
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
	s.Lost = l.stats.Lost() + l.stats.DNSLost + l.stats.DNSQueryLost
	s.DNSIgnored = l.stats.DNS.Ignored()
	if dt := now.Sub(l.lastTick).Seconds(); dt > 0 {
		s.EventsPerSec = float64(s.Events-l.lastEvents) / dt
	}
	l.lastEvents, l.lastTick = s.Events, now
	l.lastStatus = s
	return s
}

// flushChunk bounds the flows committed in one transaction, and so the
// memory a flush takes.
const flushChunk = 5000

// flush commits what was gathered since the last flush: flows in the
// store's key order (bbolt inserts in order are several times faster), in
// transactions of flushChunk flows; DNS observations go with the first,
// the run record with the last. What could not be committed is given back
// for the next flush.
func (l *learner) flush(st *store.Store) error {
	now := time.Now()
	stats, err := l.probe.Stats()
	if err != nil {
		stats = l.stats // the probe is closed: the loop's last reading
	}
	status := l.agg.status(now)
	t := l.agg.take()
	l.run.End = now.UTC()
	l.run.Events = status.Events
	l.run.LostEvents = stats.Lost()
	l.run.DNSAnswers = status.DNSAnswers
	l.run.DNSLost = stats.DNSLost + stats.DNSErrors + stats.DNSQueryLost
	l.run.DNS = stats.DNS
	if status.DNSUnrecorded > l.run.DNSUnrecorded {
		l.cfg.Log.Warn("DNS observations over the learner's bound between two flushes, not recorded",
			"unrecorded", status.DNSUnrecorded-l.run.DNSUnrecorded, "run_total", status.DNSUnrecorded, "bound", maxPendingDNS)
	}
	l.run.DNSUnrecorded = status.DNSUnrecorded
	if status.FlowsUnrecorded > l.run.FlowsUnrecorded {
		l.cfg.Log.Warn("attempts of new flows over the learner's bound of flows, not recorded",
			"attempts", status.FlowsUnrecorded-l.run.FlowsUnrecorded, "run_total", status.FlowsUnrecorded,
			"last_uid", status.FlowsUnrecordedUID, "flows", status.Flows, "bound", MaxFlows, "bound_per_user", MaxUserFlows)
	}
	l.run.FlowsUnrecorded = status.FlowsUnrecorded
	n := len(t.flows)
	for i := 0; i == 0 || i < n; i += flushChunk {
		j := min(i+flushChunk, n)
		b := &store.Batch{Flows: t.chunk(i, j), Resolvers: l.cfg.Resolvers}
		if i == 0 {
			b.DNS, b.Questions, b.QuestionsUnrecorded = t.dns, t.questions, t.questionsOver
		}
		if j == n {
			run := l.run
			b.Run = &run
		}
		if err := st.Apply(b); err != nil {
			if i == 0 {
				l.agg.giveBack(t.flows, t.dns)
				l.agg.giveBackQuestions(t.questions, t.questionsOver)
			} else {
				l.agg.giveBack(t.flows[i:], nil)
			}
			return err
		}
		if i == 0 && t.questionsOver > 0 {
			l.cfg.Log.Warn("DNS questions over the learner's bound between two flushes, not recorded",
				"unrecorded", t.questionsOver, "bound", maxPendingQuestions)
		}
		if b.DNSUnrecorded > 0 {
			l.cfg.Log.Warn("DNS observations of new addresses not recorded: the store's DNS table is full",
				"unrecorded", b.DNSUnrecorded, "bound", store.MaxDNSAddresses)
			l.agg.countDNSOver(b.DNSUnrecorded) // in the run's dns_unrecorded from the next flush
		}
	}
	return nil
}
