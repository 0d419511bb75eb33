package cli

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// MetricsSnapshot is a Gatherer that serves what a background loop
// gathered last: a scrape never waits on what the collectors read (the
// kernel, the store) nor on their locks, and costs the same under a flood
// as at rest. The metrics are at most one interval old.
type MetricsSnapshot struct {
	mu   sync.Mutex
	fams []*dto.MetricFamily
	err  error
}

// Gather returns the last gathering.
func (m *MetricsSnapshot) Gather() ([]*dto.MetricFamily, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fams, m.err
}

// Start gathers g once, then every interval until ctx ends.
func (m *MetricsSnapshot) Start(ctx context.Context, g prometheus.Gatherer, every time.Duration) {
	gather := func() {
		fams, err := g.Gather()
		m.mu.Lock()
		m.fams, m.err = fams, err
		m.mu.Unlock()
	}
	gather()
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				gather()
			}
		}
	}()
}
