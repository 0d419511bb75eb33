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
	// Ready is closed once the NFLOG subscription is in place (optional).
	Ready chan<- struct{}
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
	go func() {
		errc <- listenLog(ctx, t, o.Group, o.Ready, func(e LogEntry) {
			m.Add(e)
			if o.OnEntry != nil {
				o.OnEntry(e)
			}
		}, m)
	}()
	flush := func() {
		if o.Store == nil {
			return
		}
		b := m.Take()
		if len(b.Observations) == 0 && len(b.Minutes) == 0 && b.Unrecorded.IsZero() {
			return
		}
		if _, err := o.Store.RecordObservations(b); err != nil {
			m.GiveBack(b)
			if o.OnFlushError != nil {
				o.OnFlushError(err)
			}
		}
	}
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
		case err := <-errc:
			flush()
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		case <-tick.C:
			flush()
		case <-pruneTick.C:
			prune()
		}
	}
}
