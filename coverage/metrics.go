package coverage

import (
	"context"
	"sync"
	"time"

	"github.com/egresskit/egress/internal/promutil"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descJobs      = prometheus.NewDesc("egress_learn_coverage_jobs", "Scheduled jobs the verdict waits for (timers enabled, cron jobs scheduled), by kind and whether they ran while learning.", []string{"kind", "seen"}, nil)
	descUnseen    = prometheus.NewDesc("egress_learn_coverage_unseen_jobs", "Scheduled jobs that have not run while learning.", nil, nil)
	descNoNext    = prometheus.NewDesc("egress_learn_coverage_unseen_jobs_without_next_run", "Jobs not seen yet that no wait brings (they run at boot, or their next run is unknown).", nil, nil)
	descUntil     = prometheus.NewDesc("egress_learn_coverage_soak_until_timestamp_seconds", "When the last job not seen yet is due by (Unix time); 0 when none is.", nil, nil)
	descCovered   = prometheus.NewDesc("egress_learn_coverage_covered", "1 when every scheduled job ran while learning.", nil, nil)
	descScanned   = prometheus.NewDesc("egress_learn_coverage_last_scan_timestamp_seconds", "When the jobs were last scanned (Unix time).", nil, nil)
	descScanError = prometheus.NewDesc("egress_learn_coverage_scan_errors_total", "Scans of the jobs that failed (the metrics keep the last good scan).", nil, nil)
)

// Collector serves the last coverage scan as metrics. Scans run in the
// background (Start): a scrape never waits on the files or the store.
type Collector struct {
	mu      sync.Mutex
	last    *Coverage
	scanned time.Time
	errors  uint64
}

// Start scans at once (in the background), then every interval until ctx
// ends. A scan that fails (the learner creating the store at that moment,
// a busy store) is tried again sooner: after 1 s, doubling up to every.
func (c *Collector) Start(ctx context.Context, every time.Duration, scan func(context.Context) (*Coverage, error)) {
	go func() {
		retry := time.Second
		for {
			wait := every
			cov, err := scan(ctx)
			c.Update(cov, err)
			if err != nil {
				wait, retry = min(retry, every), min(2*retry, every)
			} else {
				retry = time.Second
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
}

// Update takes a scan's result: a failed scan is counted, and the last
// good one stays.
func (c *Collector) Update(cov *Coverage, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errors++
		return
	}
	c.last, c.scanned = cov, time.Now()
}

// Describe sends the descriptions of the metrics.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	promutil.Describe(ch, descJobs, descUnseen, descNoNext, descUntil, descCovered, descScanned, descScanError)
}

// Collect sends the last scan's figures.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gauge := prometheus.GaugeValue
	ch <- prometheus.MustNewConstMetric(descScanError, prometheus.CounterValue, float64(c.errors))
	if c.last == nil {
		return
	}
	counts := map[[2]string]int{}
	for _, k := range []string{"timer", "cron"} {
		counts[[2]string{k, "true"}], counts[[2]string{k, "false"}] = 0, 0
	}
	for _, j := range c.last.Jobs {
		if j.Counted {
			counts[[2]string{j.Kind, boolText(j.SeenDuringSoak)}]++
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descJobs, gauge, float64(n), k[0], k[1])
	}
	v := c.last.Verdict
	until := 0.0
	if v.SoakUntil != nil {
		until = float64(v.SoakUntil.Unix())
	}
	covered := 0.0
	if v.Covered {
		covered = 1
	}
	ch <- prometheus.MustNewConstMetric(descUnseen, gauge, float64(v.Unseen))
	ch <- prometheus.MustNewConstMetric(descNoNext, gauge, float64(len(v.NoNextRun)))
	ch <- prometheus.MustNewConstMetric(descUntil, gauge, until)
	ch <- prometheus.MustNewConstMetric(descCovered, gauge, covered)
	ch <- prometheus.MustNewConstMetric(descScanned, gauge, float64(c.scanned.Unix()))
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
