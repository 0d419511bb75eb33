package coverage

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCronSchedule: Vixie cron's rules on top of robfig/cron.
func TestCronSchedule(t *testing.T) {
	from := mustTime("2026-11-29T12:00:00Z") // a Sunday
	for _, c := range []struct {
		spec string
		want []string
	}{
		// Sunday is 7 as well as 0, alone and in ranges.
		{"0 6 * * 7", []string{"2026-12-06T06:00:00Z", "2026-12-13T06:00:00Z"}},
		{"0 6 * * 5-7", []string{"2026-12-04T06:00:00Z", "2026-12-05T06:00:00Z", "2026-12-06T06:00:00Z"}},
		{"0 6 * * sat,SUN", []string{"2026-12-05T06:00:00Z", "2026-12-06T06:00:00Z"}},
		{"0 6 * * 1/3", []string{"2026-11-30T06:00:00Z", "2026-12-03T06:00:00Z", "2026-12-06T06:00:00Z"}},
		// Both day fields restricted: either matches (the 1st, and Mondays).
		{"0 0 1 * 1", []string{"2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z", "2026-12-07T00:00:00Z"}},
		// One starts with "*" (even with a step): both must match, as
		// Vixie cron does (robfig/cron alone would take either).
		{"0 0 */2 * 1", []string{"2026-12-07T00:00:00Z", "2026-12-21T00:00:00Z", "2027-01-11T00:00:00Z"}},
		// Steps, ranges, names.
		{"*/20 9-10 * * *", []string{"2026-11-30T09:00:00Z", "2026-11-30T09:20:00Z", "2026-11-30T09:40:00Z", "2026-11-30T10:00:00Z"}},
		{"@weekly", []string{"2026-12-06T00:00:00Z"}},
		{"@monthly", []string{"2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"}},
		{"@HOURLY", []string{"2026-11-29T13:00:00Z"}},
		{"15 3 29 feb *", []string{"2028-02-29T03:15:00Z"}},
	} {
		fields := strings.Fields(c.spec)
		s, err := parseCronSchedule(fields, time.UTC)
		if err != nil {
			t.Errorf("%s: %v", c.spec, err)
			continue
		}
		var got []string
		at := from
		for range c.want {
			at = s.Next(at)
			got = append(got, at.UTC().Format(time.RFC3339))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.spec, got, c.want)
		}
	}
	for _, bad := range []string{"*/0 * * * *", "0 0 * * 8", "0 0 * * 6-1", "61 * * * *", "@every 5m", "@sometimes", "* * * *", "TZ=UTC * * * *", "0 0 * * mon-8"} {
		if _, err := parseCronSchedule(strings.Fields(bad), time.UTC); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestCronLines: system and user lines, variables, comments, % input.
func TestCronLines(t *testing.T) {
	for _, c := range []struct {
		line            string
		system, ok      bool
		spec, user, cmd string
	}{
		{"# m h dom mon dow", true, false, "", "", ""},
		{"   ", true, false, "", "", ""},
		{"MAILTO=root", true, false, "", "", ""},
		{`PATH = /usr/bin:/bin`, true, false, "", "", ""},
		{"17 *\t* * *\troot    cd / && run-parts --report /etc/cron.hourly", true, true, "17 * * * *", "root", "cd / && run-parts --report /etc/cron.hourly"},
		{"@daily  nobody /usr/bin/thing --x", true, true, "@daily", "nobody", "/usr/bin/thing --x"},
		{"*/15 * * * * /home/alice/bin/sync  --quiet", false, true, "*/15 * * * *", "", "/home/alice/bin/sync  --quiet"},
		{`0 1 * * * date +\%F >> /tmp/d%line one%line two`, false, true, "0 1 * * *", "", "date +%F >> /tmp/d"},
	} {
		e, ok := parseCronLine(c.line, c.system, time.UTC)
		if ok != c.ok || ok && (e.spec != c.spec || e.user != c.user || e.command != c.cmd || e.err != nil) {
			t.Errorf("%q: ok %v spec %q user %q cmd %q err %v", c.line, ok, e.spec, e.user, e.command, e.err)
		}
	}
	if e, ok := parseCronLine("0 1 * * * root", true, time.UTC); !ok || e.err == nil {
		t.Errorf("a system line without a command: %+v", e)
	}
}

func TestRunParts(t *testing.T) {
	for _, c := range []struct{ cmd, dir, guard string }{
		{"cd / && run-parts --report /etc/cron.hourly", "/etc/cron.hourly", ""},
		{"test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }", "/etc/cron.daily", "/usr/sbin/anacron"},
		{"[ -x /usr/sbin/anacron ] || run-parts /etc/cron.weekly", "/etc/cron.weekly", "/usr/sbin/anacron"},
		{"run-parts --list /etc/cron.daily", "", ""},
		{"/usr/bin/backup", "", ""},
	} {
		dir, guard := runParts(c.cmd)
		if dir != c.dir || guard != c.guard {
			t.Errorf("%q: %q %q", c.cmd, dir, guard)
		}
	}
	for n, want := range map[string]bool{"man-db": true, "0anacron": true, "backup.sh": false, "x~": false, "dpkg.dpkg-old": false, "ok_2": true} {
		if runPartsName(n) != want {
			t.Errorf("runPartsName(%q) != %v", n, want)
		}
	}
}

func TestTimespanAndCgroups(t *testing.T) {
	for in, want := range map[string]time.Duration{"15min": 15 * time.Minute, "1d": 24 * time.Hour, "12h": 12 * time.Hour, "6000": 6000 * time.Second,
		"1h 30min": 90 * time.Minute, "1h30min": 90 * time.Minute, "2.5h": 150 * time.Minute, "1w": 7 * 24 * time.Hour, "500ms": 500 * time.Millisecond} {
		if got, err := parseTimespan(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "infinity", "5 parsecs", "-1s", "1000000y"} {
		if _, err := parseTimespan(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, c := range [][3]string{
		{"fstrim.service", "", "/system.slice/fstrim.service"},
		{"pg_dump@15-main.service", "", "/system.slice/system-pg_dump.slice/pg_dump@15-main.service"},
		{"systemd-fsck@dev-sda1.service", "", `/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-sda1.service`},
		{"backup.service", "batch-nightly.slice", "/batch.slice/batch-nightly.slice/backup.service"},
		{"x.service", "-.slice", "/x.service"},
	} {
		if got := serviceCgroup(c[0], c[1]); got != c[2] {
			t.Errorf("serviceCgroup(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}
