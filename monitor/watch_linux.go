//go:build linux

package monitor

import (
	"context"
	"errors"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

// WatchOptions tune Watch.
type WatchOptions struct {
	Group uint16
	// Store receives the observations every Flush (nil: keep them in
	// memory only).
	Store *store.Store
	Flush time.Duration
	// OnEntry sees each logged packet (optional).
	OnEntry func(LogEntry)
	// Services, when set, names the service of each logged packet's
	// socket (see ServiceNamer); nil: packets are the users' only.
	Services *ServiceNamer
	// Ready is closed once the NFLOG subscription is in place (optional).
	Ready chan<- struct{}
	// Status, when set, reads the table's counters at every flush: the
	// store's record of the run (store.Watch) then counts the packets
	// the log's rate limits kept out of the log (StatusOf).
	Status func() (*nft.Status, error)
	// OnStatusError hears about a read of the counters that failed.
	OnStatusError func(error)
	// OnFlushError hears about a flush that failed; the observations are
	// kept for the next one (within the monitor's bounds).
	OnFlushError func(error)
	// Prune, when set, prunes the store at the start and every PruneEvery
	// (default an hour), with Now filled in and the plans of the current
	// generations and rollback targets kept; OnPrune hears the result.
	Prune      *store.PruneOptions
	PruneEvery time.Duration
	OnPrune    func(store.PruneResult, error)
}

// Watch subscribes to the NFLOG group of the default rules in the target
// namespace, counts every logged packet in m, and writes the counts to the
// store as observations until ctx ends, then flushes a last time.
func Watch(ctx context.Context, t nft.Target, m *Monitor, o WatchOptions) error {
	if o.Flush <= 0 {
		o.Flush = 5 * time.Second
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = time.Hour
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	listening := make(chan struct{})
	go func() {
		errc <- listenLog(ctx, t, o.Group, listening, func(e LogEntry) {
			o.Services.name(&e)
			m.Add(e)
			if o.OnEntry != nil {
				o.OnEntry(e)
			}
		}, m)
	}()
	// The run is recorded from the moment the subscription is in place
	// (nil before).
	var run *session
	flush := func(final bool) { flushRun(m, run, o, time.Now(), final) }
	prune := func() {
		if o.Store == nil || o.Prune == nil {
			return
		}
		po := *o.Prune
		po.Now, po.KeepPlans = time.Now(), rollout.PlansToKeep
		res, err := o.Store.Prune(po)
		if o.OnPrune != nil {
			o.OnPrune(res, err)
		}
	}
	prune()
	tick := time.NewTicker(o.Flush)
	defer tick.Stop()
	pruneTick := time.NewTicker(o.PruneEvery)
	defer pruneTick.Stop()
	for {
		select {
		case <-listening:
			listening = nil
			run = newSession(t, o.Group, time.Now(), o.Status)
			flush(false)
			if o.Ready != nil {
				close(o.Ready)
			}
		case err := <-errc:
			flush(true)
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		case <-tick.C:
			flush(false)
		case <-pruneTick.C:
			prune()
		}
	}
}

// flushRun writes what m counted since the last flush to the store at
// now, with the monitor's run when it has started: every flush with
// something to record, its first, and one every Heartbeat. What a flush
// cannot write goes back to m for the next one.
func flushRun(m *Monitor, run *session, o WatchOptions, now time.Time, final bool) {
	if o.Store == nil {
		return
	}
	b := m.Take()
	empty := len(b.Observations) == 0 && len(b.Minutes) == 0 && b.Unrecorded.IsZero()
	if run != nil {
		if empty && !final && !run.due(now) {
			return
		}
		if err := run.update(now, m.Stats(), final); err != nil && o.OnStatusError != nil {
			o.OnStatusError(err)
		}
		b.Watch = &run.w
	} else if empty {
		return
	}
	if _, err := o.Store.RecordObservations(b); err != nil {
		m.GiveBack(b)
		if o.OnFlushError != nil {
			o.OnFlushError(err)
		}
		return
	}
	if run != nil {
		run.written = now
	}
}
