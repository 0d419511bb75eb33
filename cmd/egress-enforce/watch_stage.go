package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
)

// stagedWarner says loudly when the table audits a packet of a service
// the current generation enforces (--enforce-services): its cgroup was
// created again and the table holds its old id, so it is let through.
// That happens when no keeper ("egress-enforce services", or follow) runs.
type stagedWarner struct {
	log      *slog.Logger
	mu       sync.Mutex
	enforced []string
	warned   map[string]time.Time
}

// stagedWarnEvery bounds the warnings: one a service a minute.
const stagedWarnEvery = time.Minute

// load reads the current generation's enforced services. Watch calls it
// once before it subscribes to the log, so that a packet logged after the
// ready line meets the list (read only by run's goroutine, a packet
// arriving first went unwarned).
func (w *stagedWarner) load(st *store.Store, t nft.Target, table string) {
	_, p, err := currentPlan(st, t, table)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.enforced = nil
	if p != nil {
		w.enforced = slices.Clone(p.EnforceServices)
	}
}

// run reads the current generation's enforced services again every
// keepGenerationEvery until ctx ends.
func (w *stagedWarner) run(ctx context.Context, st *store.Store, t nft.Target, table string) {
	for {
		sleep(ctx, keepGenerationEvery)
		if ctx.Err() != nil {
			return
		}
		w.load(st, t, table)
	}
}

// see checks one logged packet.
func (w *stagedWarner) see(le monitor.LogEntry) {
	if le.Action != monitor.ObsActionAudit || le.Service == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.enforced, le.Service) || time.Since(w.warned[le.Service]) < stagedWarnEvery {
		return
	}
	if w.warned == nil {
		w.warned = map[string]time.Time{}
	}
	w.warned[le.Service] = time.Now()
	w.log.Error("a service staged for enforcement was only audited: the table holds a stale cgroup id for it (restarted) and lets it through; run \"egress-enforce services\" (or follow) to keep the ids current",
		"service", le.Service, "dst", le.Dst, "port", le.Port)
}
