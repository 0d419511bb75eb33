//go:build linux

package cli

import (
	"context"
	"time"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/coverage"
	"github.com/egresskit/egress/store"
)

// ScanCoverage scans the scheduled jobs at the configured places
// (coverage_*) against a soak's learning runs and flows, with what this
// host tells (coverage.Detect) in the notes.
func ScanCoverage(ctx context.Context, cfg *config.Config, now time.Time, runs []store.Run, flows []store.Flow) (*coverage.Coverage, error) {
	o := coverage.Options{
		Root: cfg.CoverageRoot, UnitDirs: cfg.CoverageUnitDirs, TimerStamps: cfg.CoverageTimerStamps,
		Crontab: cfg.CoverageCrontab, CronD: cfg.CoverageCronD, Anacrontab: cfg.CoverageAnacrontab,
		AnacronSpool: cfg.CoverageAnacronSpool, UserCrontabs: cfg.CoverageUserCrontabs,
		Now: now, Runs: runs, Flows: flows,
	}
	notes := coverage.Detect(ctx, &o)
	c, err := coverage.Scan(o)
	if err != nil {
		return nil, err
	}
	c.Notes = append(notes, c.Notes...)
	return c, nil
}
