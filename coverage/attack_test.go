package coverage

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestUserUnitCannotPassForService: a user may run units of her own, in
// her user manager's slice, with any name. One named fstrim.service that
// connects must not count as the system's fstrim.service having run:
// that would end the soak before the weekly job runs. Only the system
// slice's cgroup counts.
func TestUserUnitCannotPassForService(t *testing.T) {
	// Monday's elapse is tomorrow: only the flows can make it seen.
	o := fixOptions(fixtureRoot(t))
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	j := jobNamed(t, c, "fstrim.timer")
	if j.SeenDuringSoak || j.Connected || len(j.Destinations) != 0 {
		t.Errorf("alice's own fstrim.service passed for the system's: %+v", j)
	}
	if j.Match != "cgroup /system.slice/fstrim.service" {
		t.Errorf("match %q", j.Match)
	}
	// The service's real cgroup does count.
	f := fixFlows()[2]
	f.Cgroups = []string{"/system.slice/fstrim.service"}
	o.Flows = append(o.Flows, f)
	if c, err = Scan(o); err != nil {
		t.Fatal(err)
	}
	if j := jobNamed(t, c, "fstrim.timer"); !j.SeenDuringSoak || j.SeenBy != "connections" {
		t.Errorf("the system slice's fstrim.service connected, yet: %+v", j)
	}
}

// TestHostileCrontab: a user writes her crontab. Escape sequences in it
// (which would rewrite the operator's terminal, e.g. hide a line or fake
// "yes"), tabs that would shift the table's columns, broken fields
// (a zero step, a TZ= the cron library would cut at a missing space),
// and a crontab larger than the bound: the scan neither fails nor
// panics, prints every control character escaped, and notes the file it
// did not read.
func TestHostileCrontab(t *testing.T) {
	root := fixtureRoot(t)
	dir := filepath.Join(root, "var/spool/cron/crontabs")
	evil := "*/5 * * * * /bin/true \x1b[2K\x1b[1A\rfake\tyes\x07\n" +
		"*/0 * * * * /bin/zero-step\n" +
		"TZ=x * * * * /bin/tz\n" +
		"5 4 * * * TZ=x\n" +
		"*/5 * * * TZ=Europe/Berlin /bin/tzfield\n" +
		"0 0 31 2 * /bin/never\n" +
		"@every 5m /bin/every\n" +
		"\x00\x01\x02 * * * * /bin/nul\n"
	if err := os.WriteFile(filepath.Join(dir, "mallory"), []byte(evil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bob"), bytes.Repeat([]byte("* * * * * /bin/true\n"), maxFileSize/20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "carol"), bytes.Repeat([]byte("*/5 * * * * /bin/true\n"), maxJobsPerFile+50), 0o600); err != nil {
		t.Fatal(err)
	}
	c, text := scanText(t, fixOptions(root))
	for i, r := range text {
		if r < 0x20 && r != '\n' || r == 0x7f {
			t.Fatalf("a control character %#x in the output at %d:\n%q", r, i, text[max(0, i-80):min(len(text), i+80)])
		}
	}
	if !strings.Contains(text, `\x1b[2K\x1b[1A\rfake\tyes\a`) {
		t.Errorf("the command is not shown escaped:\n%s", text)
	}
	if !strings.Contains(text, "/var/spool/cron/crontabs/bob: larger than") {
		t.Errorf("the oversized crontab is not noted:\n%s", text)
	}
	carol := 0
	for _, j := range c.Jobs {
		if strings.HasPrefix(j.Name, "/var/spool/cron/crontabs/carol:") {
			carol++
		}
	}
	if carol != maxJobsPerFile || !strings.Contains(text, "carol: more than 1000 jobs; the lines from 1001 on are left out") {
		t.Errorf("carol's %d lines gave %d jobs", maxJobsPerFile+50, carol)
	}
	for _, name := range []string{"mallory:2", "mallory:5", "mallory:7", "mallory:8"} {
		if j := jobNamed(t, c, "/var/spool/cron/crontabs/"+name); j.State != "invalid" || j.Counted {
			t.Errorf("%s: %+v", name, j)
		}
	}
	// Line 3 is a variable setting for cron (TZ=...), line 4 a job whose
	// command is TZ=x; Feb 31 never comes.
	if j := jobNamed(t, c, "/var/spool/cron/crontabs/mallory:6"); j.NextRun != nil || j.State != "never" || j.Counted {
		t.Errorf("Feb 31: %+v", j)
	}
}

// TestSchedulersNotRunning: without systemd as PID 1 timers do not
// elapse, and the verdict does not wait for them (the stamps still say
// when they last ran); the cron jobs that give way to timers under
// systemd are jobs again. Without a cron daemon, crontab jobs do not run
// either, but anacron's jobs still count.
func TestSchedulersNotRunning(t *testing.T) {
	o := fixOptions(fixtureRoot(t))
	o.Systemd = false
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range c.Jobs {
		if j.Kind == "timer" && (j.Counted || j.SeenBy == "schedule" || j.LastRunFrom == "schedule") {
			t.Errorf("%s without systemd: %+v", j.Name, j)
		}
	}
	if j := jobNamed(t, c, "apt-daily.timer"); at(j.LastRun) != "2026-11-29T07:31:12Z" {
		t.Errorf("apt-daily.timer: %+v", j)
	}
	if j := jobNamed(t, c, "/etc/cron.d/e2scrub_all:1"); j.State != "scheduled" || !j.Counted || !j.SeenDuringSoak {
		t.Errorf("e2scrub_all's cron line without systemd: %+v", j)
	}
	o.Cron = false
	if c, err = Scan(o); err != nil {
		t.Fatal(err)
	}
	for _, j := range c.Jobs {
		anacron := strings.HasPrefix(j.Schedule, "anacron ")
		if j.Kind == "cron" && j.Counted != anacron {
			t.Errorf("%s without cron: counted %v", j.Name, j.Counted)
		}
	}
}

// TestNoLearningRun: before any learning run, no job is seen, and the
// verdict says so.
func TestNoLearningRun(t *testing.T) {
	o := fixOptions(fixtureRoot(t))
	o.Runs, o.Flows = nil, nil
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range c.Jobs {
		if j.SeenDuringSoak {
			t.Errorf("%s seen without a learning run", j.Name)
		}
	}
	if c.Verdict.Covered || c.SoakStart != nil || !strings.HasPrefix(c.Verdict.Text, "no learning run yet") {
		t.Errorf("verdict %+v", c.Verdict)
	}
}

// TestBootOnlyJobs: a job that runs only at boot (@reboot, OnBootSec=
// alone) has no next run to wait for: the verdict names it rather than
// calling the soak complete.
func TestBootOnlyJobs(t *testing.T) {
	root := fixtureRoot(t)
	write(t, root, "var/spool/cron/crontabs/alice", "@reboot /home/alice/bin/announce\n")
	write(t, root, "usr/lib/systemd/system/warmup.timer", "[Timer]\nOnBootSec=5min\n")
	write(t, root, "usr/lib/systemd/system/warmup.service", "[Service]\nExecStart=/usr/bin/warmup\n")
	if err := os.Symlink("../warmup.timer", filepath.Join(root, "usr/lib/systemd/system/timers.target.wants/warmup.timer")); err != nil {
		t.Fatal(err)
	}
	o := fixOptions(root)
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	v := c.Verdict
	if strings.Join(v.NoNextRun, ",") != "warmup.timer,/var/spool/cron/crontabs/alice:1" || v.Covered {
		t.Errorf("no next run: %v", v.NoNextRun)
	}
	if !strings.Contains(v.Text, "2 cannot be waited for") {
		t.Errorf("verdict: %s", v.Text)
	}
	// Booted during the soak: the warm-up ran in run 2.
	o.Boot = mustTime("2026-11-28T10:00:00Z")
	if c, err = Scan(o); err != nil {
		t.Fatal(err)
	}
	if j := jobNamed(t, c, "warmup.timer"); !j.SeenDuringSoak || at(j.LastRun) != "2026-11-28T10:05:00Z" {
		t.Errorf("warmup.timer after a boot in the soak: %+v", j)
	}
}

// TestCoveredSoak: once every job ran while learning, the verdict says
// the soak covers them.
func TestCoveredSoak(t *testing.T) {
	o := fixOptions(fixtureRoot(t))
	o.Runs = append(o.Runs, store2Run(3, "2026-11-29T12:00:00Z", "2026-12-03T00:00:00Z"))
	o.Now = mustTime("2026-12-03T00:00:00Z")
	// anacron ran the weekly jobs on Tuesday, inside run 3
	write(t, o.Root, "var/spool/anacron/cron.weekly", "20261201\n")
	stamp := mustTime("2026-12-01T07:40:00Z")
	if err := os.Chtimes(filepath.Join(o.Root, "var/spool/anacron/cron.weekly"), stamp, stamp); err != nil {
		t.Fatal(err)
	}
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Verdict.Covered || c.Verdict.SoakUntil != nil || !strings.HasPrefix(c.Verdict.Text, "the soak covers every scheduled job") {
		t.Errorf("verdict %+v", c.Verdict)
		for _, j := range c.Jobs {
			if j.Counted && !j.SeenDuringSoak {
				t.Logf("unseen: %s", j.Name)
			}
		}
	}
}

func write(t *testing.T, root, p, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var _ = time.Second

// TestNarrowRuns: a learning run attached to a child cgroup saw only what
// ran inside it: a job that ran elsewhere during it is not seen (a test's
// or a demo's run must not end the host's soak), one inside it is.
func TestNarrowRuns(t *testing.T) {
	o := fixOptions(fixtureRoot(t))
	o.CgroupMount = "/sys/fs/cgroup"
	narrow := func(cg string) []store.Run {
		runs := append([]store.Run(nil), fixRuns...)
		for i := range runs {
			runs[i].Cgroup = cg
		}
		return runs
	}
	o.Runs = narrow("/sys/fs/cgroup/lab.slice/test-1")
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range c.Jobs {
		if j.SeenDuringSoak && j.SeenBy != "connections" {
			t.Errorf("%s seen (%s) by runs of a child cgroup", j.Name, j.SeenBy)
		}
	}
	if !strings.Contains(strings.Join(c.Notes, "\n"), "learning run 1 watched only /sys/fs/cgroup/lab.slice/test-1") {
		t.Errorf("notes: %v", c.Notes)
	}
	o.Runs = narrow("/sys/fs/cgroup/system.slice/")
	if c, err = Scan(o); err != nil {
		t.Fatal(err)
	}
	if j := jobNamed(t, c, "apt-daily.timer"); j.SeenBy != "stamp" {
		t.Errorf("apt-daily.timer with runs of system.slice: %+v", j)
	}
	if j := jobNamed(t, c, "/etc/cron.daily/man-db"); j.SeenDuringSoak {
		t.Errorf("a cron job (cgroup unknown) seen by runs of system.slice: %+v", j)
	}
	o.Runs = narrow("/sys/fs/cgroup")
	if c, err = Scan(o); err != nil {
		t.Fatal(err)
	}
	if j := jobNamed(t, c, "/etc/cron.daily/man-db"); j.SeenBy != "anacron" {
		t.Errorf("runs of the whole host: %+v", j)
	}
}
