package coverage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestCollector: the metrics carry the fixture's coverage: the jobs not
// seen yet, and when the last of them is due; a failed scan is counted
// and keeps the last good figures.
func TestCollector(t *testing.T) {
	c, err := Scan(fixOptions(fixtureRoot(t)))
	if err != nil {
		t.Fatal(err)
	}
	col := &Collector{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	if got := gather(t, reg); len(got) != 1 || got["egress_learn_coverage_scan_errors_total"] != 0 {
		t.Errorf("before a scan: %v", got)
	}
	col.Update(c, nil)
	col.Update(nil, errors.New("the store is busy"))
	got := gather(t, reg)
	want := map[string]float64{
		"egress_learn_coverage_unseen_jobs":                     5,
		"egress_learn_coverage_unseen_jobs_without_next_run":    0,
		"egress_learn_coverage_soak_until_timestamp_seconds":    float64(mustTime("2026-12-02T00:10:00Z").Unix()),
		"egress_learn_coverage_covered":                         0,
		"egress_learn_coverage_scan_errors_total":               1,
		`egress_learn_coverage_jobs{kind="timer",seen="true"}`:  5,
		`egress_learn_coverage_jobs{kind="timer",seen="false"}`: 2,
		`egress_learn_coverage_jobs{kind="cron",seen="true"}`:   5,
		`egress_learn_coverage_jobs{kind="cron",seen="false"}`:  3,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if got["egress_learn_coverage_last_scan_timestamp_seconds"] <= 0 {
		t.Errorf("no scan time: %v", got)
	}
}

// gather returns every sample as name{labels} -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			if len(m.GetLabel()) > 0 {
				name += "{"
				for i, l := range m.GetLabel() {
					if i > 0 {
						name += ","
					}
					name += l.GetName() + `="` + l.GetValue() + `"`
				}
				name += "}"
			}
			out[name] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// TestCollectorRetriesAFailedScan: a scan that fails (the learner creating
// the store at that moment) is tried again long before the next interval,
// so the metrics do not stay empty for it.
func TestCollectorRetriesAFailedScan(t *testing.T) {
	c, err := Scan(fixOptions(fixtureRoot(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	scans := make(chan struct{}, 8)
	calls := 0
	col := &Collector{}
	col.Start(ctx, time.Hour, func(context.Context) (*Coverage, error) {
		calls++
		defer func() { scans <- struct{}{} }()
		if calls == 1 {
			return nil, errors.New("open store: the file is empty, not a store")
		}
		return c, nil
	})
	for i := 0; i < 2; i++ {
		select {
		case <-scans:
		case <-time.After(time.Minute): // bounds a hang only; the retry comes after 1 s
			t.Fatalf("scan %d did not come before the hour-long interval", i+1)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	got := gather(t, reg)
	if got["egress_learn_coverage_scan_errors_total"] != 1 || got["egress_learn_coverage_last_scan_timestamp_seconds"] <= 0 {
		t.Errorf("after a failed scan and its retry: %v", got)
	}
}
