package config

import (
	"fmt"
	"path"
	"strings"
	"unicode"
)

// checkCoverage checks the coverage_* paths: absolute, without control
// characters. Every one but coverage_root is read inside coverage_root.
func (c *Config) checkCoverage() error {
	paths := map[string][]string{
		"coverage_root": {c.CoverageRoot}, "coverage_timer_stamps": {c.CoverageTimerStamps},
		"coverage_crontab": {c.CoverageCrontab}, "coverage_cron_d": {c.CoverageCronD},
		"coverage_anacrontab": {c.CoverageAnacrontab}, "coverage_anacron_spool": {c.CoverageAnacronSpool},
		"coverage_unit_dirs": c.CoverageUnitDirs, "coverage_user_crontabs": c.CoverageUserCrontabs,
	}
	for key, list := range paths {
		for _, p := range list {
			if !path.IsAbs(p) {
				return fmt.Errorf("%s: %q is not an absolute path", key, p)
			}
			if strings.ContainsFunc(p, unicode.IsControl) {
				return fmt.Errorf("%s: %q holds a control character", key, p)
			}
		}
	}
	return nil
}
