package config

import (
	"strings"
	"testing"
	"time"
)

// TestBoundsSettings: drop_log_rate, retention and keep_generations have
// their defaults, accept days, and refuse what makes no sense.
func TestBoundsSettings(t *testing.T) {
	c, err := load(t, "db: /x.db\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DropLogRate != 100 || c.Retention != 90*24*time.Hour || c.KeepGenerations != 50 {
		t.Errorf("defaults: drop_log_rate %d, retention %s, keep_generations %d", c.DropLogRate, c.Retention, c.KeepGenerations)
	}
	for yaml, want := range map[string]time.Duration{"retention: 7d": 7 * 24 * time.Hour, "retention: 36h": 36 * time.Hour, `retention: "0"`: 0} {
		c, err := load(t, yaml+"\n", nil)
		if err != nil || c.Retention != want {
			t.Errorf("%s: %v, %v", yaml, c, err)
		}
	}
	for yaml, key := range map[string]string{
		"drop_log_rate: 0":     "drop_log_rate",
		"retention: soon":      "retention",
		"retention: 10m":       "retention",
		"retention: -5d":       "retention",
		"keep_generations: -1": "keep_generations",
	} {
		if _, err := load(t, yaml+"\n", nil); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v, want an error naming %s", yaml, err, key)
		}
	}
}
