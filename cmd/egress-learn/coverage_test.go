package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/coverage"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// coverageFixture copies the coverage package's fixture host (real unit
// files and crontabs) and dates its stamps; soak writes a store whose
// learning runs and flows make its soak.
func coverageFixture(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "host")
	if out, err := exec.Command("cp", "-a", "../../coverage/testdata/host", root).CombinedOutput(); err != nil {
		t.Fatalf("copy the fixture: %v\n%s", err, out)
	}
	for p, at := range map[string]string{
		"var/lib/systemd/timers/stamp-apt-daily.timer": "2026-11-29T07:31:12Z",
		"var/lib/systemd/timers/stamp-fstrim.timer":    "2026-11-23T01:12:40Z",
		"var/spool/anacron/cron.daily":                 "2026-11-29T07:35:02Z",
		"var/spool/anacron/cron.weekly":                "2026-11-24T07:35:04Z",
		"var/spool/anacron/cron.monthly":               "2026-11-27T07:35:06Z",
	} {
		ts := mustParse(t, at)
		if err := os.Chtimes(filepath.Join(root, p), ts, ts); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func mustParse(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func soakStore(t *testing.T) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mount, err := cgroupbpf.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]string{{"2026-11-26T08:00:00Z", "2026-11-27T20:00:00Z"}, {"2026-11-28T09:00:00Z", "2026-11-29T12:00:00Z"}} {
		run, err := st.BeginRun(store.Run{Start: mustParse(t, r[0]), Cgroup: mount})
		if err != nil {
			t.Fatal(err)
		}
		run.End, run.Finished = mustParse(t, r[1]), true
		b := &store.Batch{Run: &run}
		if run.ID == 2 {
			b.Flows = []store.Flow{{FlowKey: store.FlowKey{UID: 0, Proto: 6, IP: netip.MustParseAddr("172.65.32.248"), Port: 443},
				Hits: 2, FirstSeen: mustParse(t, "2026-11-28T12:00:00Z"), LastSeen: mustParse(t, "2026-11-28T12:00:01Z"),
				Processes: []string{"certbot"}, Cgroups: []string{"/system.slice/certbot.service"}}}
		}
		if err := st.Apply(b); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// TestCoverageCommand: coverage --json on the fixture host, at a moved
// clock, against a store of two learning runs: the jobs, their runs and
// the verdict; the table; report's summary; the configuration keys.
func TestCoverageCommand(t *testing.T) {
	root, db := coverageFixture(t), soakStore(t)
	env := []string{"TZ=UTC"}
	out, stderr, err := runCLI(env, "coverage", "--db", db, "--root", root, "--now", "2026-11-29T12:00:00Z", "--json")
	if err != nil {
		t.Fatalf("coverage: %v\n%s", err, stderr)
	}
	var c coverage.Coverage
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("coverage --json: %v\n%s", err, out)
	}
	jobs := map[string]coverage.Job{}
	for _, j := range c.Jobs {
		jobs[j.Name] = j
	}
	for name, seenBy := range map[string]string{
		"apt-daily.timer": "stamp", "certbot.timer": "connections", "e2scrub_all.timer": "schedule",
		"/etc/cron.daily/man-db": "anacron", "/var/spool/cron/crontabs/alice:8": "schedule",
		"fstrim.timer": "", "/etc/cron.weekly/man-db": "", "pg_dump@15-main.timer": "",
	} {
		j, ok := jobs[name]
		if !ok || j.SeenDuringSoak != (seenBy != "") || j.SeenBy != seenBy {
			t.Errorf("%s: %+v", name, j)
		}
	}
	if j := jobs["certbot.timer"]; !j.Connected || len(j.Destinations) != 1 || j.Kind != "timer" || j.NextRun == nil {
		t.Errorf("certbot.timer: %+v", j)
	}
	// Another root: its boot time is unknown, so the monotonic timer has
	// no next run to wait for.
	v := c.Verdict
	if v.Covered || v.Unseen != 6 || v.SoakUntil == nil || !v.SoakUntil.Equal(mustParse(t, "2026-12-02T00:10:00Z")) ||
		strings.Join(v.NoNextRun, ",") != "systemd-tmpfiles-clean.timer" || c.LearningRuns != 2 {
		t.Errorf("verdict %+v (runs %d)", v, c.LearningRuns)
	}

	table, stderr, err := runCLI(env, "coverage", "--db", db, "--root", root, "--now", "2026-11-29T12:00:00Z")
	if err != nil || !strings.Contains(table, "verdict: 6 of 15 scheduled job(s) have not run while learning; keep learning until after 2026-12-02 00:10:00") ||
		!strings.Contains(table, "fstrim.timer ") {
		t.Errorf("coverage table (%v):\n%s\n%s", err, table, stderr)
	}

	// report ends with the coverage; coverage_root from the environment.
	report, stderr, err := runCLI(append(env, "EGRESS_COVERAGE_ROOT="+root), "report", "--db", db, "--now", "2026-11-29T12:00:00Z")
	if err != nil || !strings.Contains(report, "scheduled jobs (egress-learn coverage): 6 of 15 scheduled job(s) have not run while learning") ||
		!strings.Contains(report, "not seen yet: fstrim.timer (OnCalendar=weekly") {
		t.Errorf("report (%v):\n%s\n%s", err, report, stderr)
	}

	// A configuration file moves the users' crontabs: alice's are gone.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("coverage_root: "+root+"\ncoverage_user_crontabs: [/var/spool/cron/tabs]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = runCLI(env, "coverage", "--config", cfg, "--db", db, "--now", "2026-11-29T12:00:00Z", "--json")
	if err != nil || strings.Contains(out, "crontabs/alice") || !strings.Contains(out, `"fstrim.timer"`) {
		t.Errorf("coverage with a configuration (%v):\n%s", err, stderr)
	}
}

// TestCoverageWithoutStore: before any learning run there is no store;
// coverage still lists the jobs and says no run was seen.
func TestCoverageWithoutStore(t *testing.T) {
	root := coverageFixture(t)
	db := filepath.Join(t.TempDir(), "none.db")
	out, stderr, err := runCLI([]string{"TZ=UTC"}, "coverage", "--db", db, "--root", root, "--now", "2026-11-29T12:00:00Z")
	if err != nil || !strings.Contains(out, "verdict: no learning run yet") || !strings.Contains(out, "no store at "+db) {
		t.Errorf("coverage without a store (%v):\n%s\n%s", err, out, stderr)
	}
	if _, err := os.Stat(db); err == nil {
		t.Errorf("coverage created %s", db)
	}
	_, stderr, err = runCLI(nil, "coverage", "--db", db, "--root", "relative/dir")
	if err == nil || !strings.Contains(stderr, "coverage_root") {
		t.Errorf("a relative --root: %v\n%s", err, stderr)
	}
}

// TestCoverageMetrics: a learner with --metrics-addr serves the coverage
// of the host it is configured to read (the fixture): every counted job
// by kind and seen, and when the last unseen one is due.
func TestCoverageMetrics(t *testing.T) {
	root := coverageFixture(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("coverage_root: "+root+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := lab.FreeAddr(t)
	startLearner(t, "--metrics-addr", addr, "--config", cfg)
	url := "http://" + addr + "/metrics"
	lab.Await(t, "a coverage scan in the metrics", func() bool {
		_, ok := lab.MetricValue(lab.Scrape(t, url), "egress_learn_coverage_last_scan_timestamp_seconds", nil)
		return ok
	})
	fams := lab.Scrape(t, url)
	var counted float64
	for _, kind := range []string{"timer", "cron"} {
		for _, seen := range []string{"true", "false"} {
			v, ok := lab.MetricValue(fams, "egress_learn_coverage_jobs", map[string]string{"kind": kind, "seen": seen})
			if !ok {
				t.Errorf("no egress_learn_coverage_jobs{kind=%q,seen=%q}", kind, seen)
			}
			counted += v
		}
	}
	if counted != 15 {
		t.Errorf("counted jobs %v, want the fixture's 15", counted)
	}
	unseen, _ := lab.MetricValue(fams, "egress_learn_coverage_unseen_jobs", nil)
	until, _ := lab.MetricValue(fams, "egress_learn_coverage_soak_until_timestamp_seconds", nil)
	if unseen < 1 || until < float64(time.Now().Unix()) {
		t.Errorf("unseen %v, soak until %v", unseen, until)
	}
}
