package deploy

import (
	"os"
	"strings"
	"testing"
)

// TestRestoreUnitRunsBeforeTheNetwork: the restore unit is a oneshot
// ordered before network-pre.target (which it pulls in), without the
// default dependencies that would order it after basic.target, and it
// runs "egress-enforce restore".
func TestRestoreUnitRunsBeforeTheNetwork(t *testing.T) {
	keys := unitKeys(t, "systemd/egress-enforce-restore.service")
	want := map[string]func(string) bool{
		"Type":                func(v string) bool { return v == "oneshot" },
		"DefaultDependencies": func(v string) bool { return v == "no" },
		"Wants":               func(v string) bool { return strings.Contains(v, "network-pre.target") },
		"Before":              func(v string) bool { return strings.Contains(v, "network-pre.target") },
		"ExecStart":           func(v string) bool { return strings.Contains(v, "egress-enforce restore ") },
		"WantedBy":            func(v string) bool { return v == "sysinit.target" },
	}
	for k, ok := range want {
		if !ok(keys[k]) {
			t.Errorf("%s=%q", k, keys[k])
		}
	}
	if strings.Contains(keys["After"], "network") {
		t.Errorf("After=%q: restore must not wait for the network", keys["After"])
	}
}

// unitKeys reads a unit file's settings: key to value, the values of a key
// set more than once joined by a space (comments left out).
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			keys[k] = strings.TrimSpace(keys[k] + " " + v)
		}
	}
	return keys
}
