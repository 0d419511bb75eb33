package coverage

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func at(t *time.Time) string {
	if t == nil {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}

// TestFixtureHost: the acceptance cases on copies of real files.
func TestFixtureHost(t *testing.T) {
	c, text := scanText(t, fixOptions(fixtureRoot(t)))
	t.Logf("\n%s", text)

	type want struct {
		name, state, seenBy, lastRun, nextRun string
		seen, counted                         bool
	}
	for _, w := range []want{
		// A daily timer that ran during the soak: its stamp is in run 2.
		{"apt-daily.timer", "enabled", "stamp", "2026-11-29T07:31:12Z", "2026-11-29T18:00:00Z", true, true},
		// A weekly one that did not: last Monday was before the soak.
		{"fstrim.timer", "enabled", "", "2026-11-23T01:12:40Z", "2026-11-30T00:00:00Z", false, true},
		// A timer for a service the learner saw connect.
		{"certbot.timer", "enabled", "connections", "2026-11-29T12:00:00Z", "2026-11-30T00:00:00Z", true, true},
		// Sunday 03:10, systemd running: this morning's elapse was in run 2.
		{"e2scrub_all.timer", "enabled", "schedule", "2026-11-29T03:10:00Z", "2026-12-06T03:10:00Z", true, true},
		// OnBootSec=15min, OnUnitActiveSec=1d: 00:15 every day since boot.
		{"systemd-tmpfiles-clean.timer", "enabled", "schedule", "2026-11-29T00:15:00Z", "2026-11-30T00:15:00Z", true, true},
		// An instance of a template, enabled through postgresql@15-main.
		{"pg_dump@15-main.timer", "enabled", "", "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z", false, true},
		{"man-db.timer", "disabled", "", "none", "2026-11-30T00:00:00Z", false, false},
		{"dpkg-db-backup.timer", "masked", "", "none", "none", false, false},
		// A cron.weekly script, through anacron: its stamp is from Tuesday.
		{"/etc/cron.weekly/man-db", "scheduled", "", "2026-11-24T07:35:04Z", "2026-12-01T00:10:00Z", false, true},
		{"/etc/cron.daily/man-db", "scheduled", "anacron", "2026-11-29T07:35:02Z", "2026-11-30T00:05:00Z", true, true},
		{"/etc/cron.monthly/0anacron", "scheduled", "anacron", "2026-11-27T07:35:06Z", "2026-12-27T00:15:00Z", true, true},
		// A user crontab line with a step expression, cron running.
		{"/var/spool/cron/crontabs/alice:8", "scheduled", "schedule", "2026-11-29T12:00:00Z", "2026-11-29T12:15:00Z", true, true},
		{"/var/spool/cron/crontabs/alice:9", "scheduled", "", "2026-11-23T04:00:00Z", "2026-11-30T04:00:00Z", false, true},
		// Cron jobs that give way to their timers while systemd runs.
		{"/etc/cron.d/certbot:17", "idle", "", "none", "2026-11-30T00:00:00Z", false, false},
		{"/etc/cron.d/e2scrub_all:1", "idle", "", "none", "2026-12-06T03:30:00Z", false, false},
	} {
		j := jobNamed(t, c, w.name)
		if j.State != w.state || j.SeenDuringSoak != w.seen || j.SeenBy != w.seenBy || j.Counted != w.counted ||
			at(j.LastRun) != w.lastRun || at(j.NextRun) != w.nextRun {
			t.Errorf("%s: state %s seen %v (%s) counted %v last %s next %s\n want state %s seen %v (%s) counted %v last %s next %s",
				w.name, j.State, j.SeenDuringSoak, j.SeenBy, j.Counted, at(j.LastRun), at(j.NextRun),
				w.state, w.seen, w.seenBy, w.counted, w.lastRun, w.nextRun)
		}
	}
	cert := jobNamed(t, c, "certbot.timer")
	if !cert.Connected || cert.Match != "cgroup /system.slice/certbot.service" || len(cert.Destinations) != 1 ||
		!strings.Contains(cert.Destinations[0], "acme-v02.api.letsencrypt.org") {
		t.Errorf("certbot.timer connections: %+v", cert)
	}
	// The drop-in's RandomizedDelaySec=1h (not the package's 12h) makes
	// its due time.
	if at(cert.DueBy) != "2026-11-30T01:01:00Z" {
		t.Errorf("certbot.timer due by %s, want 2026-11-30T01:01:00Z (1h delay + 1min accuracy)", at(cert.DueBy))
	}
	if pg := jobNamed(t, c, "pg_dump@15-main.timer"); pg.Unit != "pg_dump@15-main.service" || !strings.Contains(pg.Command, "15-main") {
		t.Errorf("pg_dump@15-main.timer: unit %q command %q", pg.Unit, pg.Command)
	}
	sync := jobNamed(t, c, "/var/spool/cron/crontabs/alice:8")
	if !sync.Connected || sync.Match != "process sync-photos of uid 1000" || sync.User != "alice" || sync.Schedule != "*/15 * * * *" {
		t.Errorf("alice's sync: %+v", sync)
	}

	v := c.Verdict
	unseen := []string{"/etc/cron.weekly/0anacron", "/etc/cron.weekly/man-db", "/var/spool/cron/crontabs/alice:9", "fstrim.timer", "pg_dump@15-main.timer"}
	var got []string
	for _, j := range c.Jobs {
		if j.Counted && !j.SeenDuringSoak {
			got = append(got, j.Name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, unseen) || v.Unseen != len(unseen) || v.Covered {
		t.Errorf("unseen %v (verdict %d, covered %v), want %v", got, v.Unseen, v.Covered, unseen)
	}
	// The weekly anacron jobs are due on Tuesday, 10 minutes after
	// anacron starts, at the latest by the end of that day.
	if at(v.SoakUntil) != "2026-12-02T00:10:00Z" || !strings.HasPrefix(v.LastDue, "/etc/cron.weekly/") || len(v.NoNextRun) != 0 {
		t.Errorf("verdict: until %s (%s), no next run %v", at(v.SoakUntil), v.LastDue, v.NoNextRun)
	}
	if !strings.Contains(v.Text, "5 of 15 scheduled job(s) have not run while learning; keep learning until after") {
		t.Errorf("verdict text: %s", v.Text)
	}
	for _, n := range []string{"/etc/cron.daily/backup.sh: run-parts skips it"} {
		if !strings.Contains(text, n) {
			t.Errorf("the output lacks %q", n)
		}
	}
}
