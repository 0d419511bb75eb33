package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/egresskit/egress/coverage"
)

// TestCoverageDefaults: the configuration's defaults are the coverage
// package's standard places.
func TestCoverageDefaults(t *testing.T) {
	c, err := NewLoader().Load("", pflag.NewFlagSet("x", pflag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	d := coverage.DefaultOptions()
	if c.CoverageRoot != d.Root || !slices.Equal(c.CoverageUnitDirs, d.UnitDirs) || c.CoverageTimerStamps != d.TimerStamps ||
		c.CoverageCrontab != d.Crontab || c.CoverageCronD != d.CronD || c.CoverageAnacrontab != d.Anacrontab ||
		c.CoverageAnacronSpool != d.AnacronSpool || !slices.Equal(c.CoverageUserCrontabs, d.UserCrontabs) {
		t.Errorf("config %+v\ncoverage %+v", c, d)
	}
}

func TestCoverageBadPaths(t *testing.T) {
	for env, want := range map[string]string{
		"EGRESS_COVERAGE_CRONTAB": "coverage_crontab",
		"EGRESS_COVERAGE_ROOT":    "coverage_root",
	} {
		t.Setenv(env, "relative/path")
		_, err := NewLoader().Load("", pflag.NewFlagSet("x", pflag.ContinueOnError))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "absolute") {
			t.Errorf("%s: %v", env, err)
		}
		t.Setenv(env, "/ok")
	}
}
