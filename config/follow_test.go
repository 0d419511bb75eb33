package config

import (
	"strings"
	"testing"
	"time"
)

// TestFollowTTLMax: follow_ttl_max defaults to an hour, parses like the
// other durations, and may not be shorter than follow_ttl_floor.
func TestFollowTTLMax(t *testing.T) {
	c, err := load(t, "follow_ttl_floor: 1m\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.FollowTTLMax != time.Hour {
		t.Errorf("default follow_ttl_max %s, want 1h", c.FollowTTLMax)
	}
	if c, err = load(t, "follow_ttl_max: 10m\n", nil); err != nil || c.FollowTTLMax != 10*time.Minute {
		t.Errorf("follow_ttl_max 10m: %v, %v", c, err)
	}
	for yaml, want := range map[string]string{
		"follow_ttl_max: soon\n":                     "follow_ttl_max",
		"follow_ttl_floor: 2h\nfollow_ttl_max: 1h\n": "shorter than follow_ttl_floor",
	} {
		if _, err := load(t, yaml, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %s", yaml, err, want)
		}
	}
}
