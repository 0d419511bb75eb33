package coverage

import (
	"os"
	"path/filepath"
	"testing"
)

// TestJobUIDs: each job says whose it is, for promote: a service's User=
// (root without one), the cron user field, root for anacron's jobs; no
// UID when the user is not on the host, or the service takes a dynamic
// one.
func TestJobUIDs(t *testing.T) {
	root := fixtureRoot(t)
	dir := filepath.Join(root, "etc/systemd/system")
	for name, text := range map[string]string{
		"dyn.timer":   "[Timer]\nOnCalendar=daily\n",
		"dyn.service": "[Service]\nExecStart=/usr/bin/true\nUser=root\nDynamicUser=yes\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Scan(fixOptions(root))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{
		"apt-daily.timer":                  0,
		"/var/spool/cron/crontabs/alice:8": 1000,
		"/etc/cron.weekly/man-db":          0,
		"pg_dump@15-main.timer":            -1, // User=postgres: no such user in the fixture
		"man-db.timer":                     -1, // User=man
		"dyn.timer":                        -1, // DynamicUser=yes
	} {
		j := jobNamed(t, c, name)
		switch {
		case want < 0 && j.UID != nil:
			t.Errorf("%s: uid %d, want none", name, *j.UID)
		case want >= 0 && (j.UID == nil || int64(*j.UID) != want):
			t.Errorf("%s: uid %v, want %d", name, j.UID, want)
		}
	}
}
