package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/store"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "egress-learn-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "egress-learn")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runCLI runs the binary with a clean EGRESS_ environment and no default
// configuration file.
func runCLI(env []string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EGRESS_") {
			out = append(out, kv)
		}
	}
	return out
}

func TestBadInputIsAClearError(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknown := write("unknown.yaml", "db: /tmp/x.db\nflush_intervall: 5s\n")
	badDur := write("baddur.yaml", "flush_interval: soon\n")
	badYAML := write("bad.yaml", "db: [unclosed\n")
	missingDB := filepath.Join(dir, "missing.db")
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"unknown key", nil, []string{"run", "--config", unknown}, []string{unknown, "flush_intervall"}},
		{"bad duration in file", nil, []string{"run", "--config", badDur}, []string{"flush_interval", "soon"}},
		{"bad yaml", nil, []string{"report", "--config", badYAML}, []string{badYAML}},
		{"missing config file", nil, []string{"report", "--config", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml"}},
		{"bad env duration", []string{"EGRESS_FLUSH_INTERVAL=abc"}, []string{"run"}, []string{"flush_interval"}},
		{"bad cidr flag", nil, []string{"run", "--ignore-cidrs", "10.0.0.0/33"}, []string{"ignore_cidrs", "10.0.0.0/33"}},
		{"bad port", nil, []string{"run", "--ignore-ports", "70000"}, []string{"ignore_ports", "70000"}},
		{"unknown user", nil, []string{"run", "--ignore-users", "no-such-user-xyz"}, []string{"no-such-user-xyz"}},
		{"report unknown user", nil, []string{"report", "--db", missingDB, "--user", "no-such-user-xyz"}, []string{"no-such-user-xyz"}},
		{"missing store", nil, []string{"report", "--db", missingDB}, []string{missingDB, "does not exist"}},
		{"bad flag", nil, []string{"run", "--duration", "forever"}, []string{"--duration"}},
		{"extra argument", nil, []string{"report", "surplus"}, []string{"surplus"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := runCLI(c.env, c.args...)
			var ee *exec.ExitError
			if err == nil || !errorsAs(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("err = %v, want exit status 1; stderr:\n%s", err, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Errorf("stack trace on bad input:\n%s", stderr)
			}
		})
	}
	if _, err := os.Stat(missingDB); err == nil {
		t.Errorf("a report created %s", missingDB)
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func TestHelpExplains(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"report", "--help"}} {
		out, _, err := runCLI(nil, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		lab.WantAll(t, fmt.Sprintf("%v: help", args), out, "Usage:", "--db", "--config")
	}
	out, _, _ := runCLI(nil, "run", "--help")
	lab.WantAll(t, "run --help", out, "--cgroup", "--duration", "--flush-interval", "--ignore-loopback", "SIGTERM")
}

// learnerLab is a lab with a learner process attached to a child cgroup.
type learnerLab struct {
	db      string
	cmd     *exec.Cmd
	stderr  *lab.Buffer
	client  lab.As
	cgroup  *lab.Cgroup
	pair    *lab.Pair
	started time.Time
}

func startLearner(t *testing.T, extra ...string) *learnerLab {
	t.Helper()
	lab.Require(t, "curl")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	l := &learnerLab{db: filepath.Join(t.TempDir(), "baseline.db"), stderr: &lab.Buffer{}, cgroup: cg, pair: pair}
	l.client = lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg}
	args := append([]string{"run", "--cgroup", cg.Path, "--db", l.db, "--flush-interval", "200ms"}, extra...)
	l.cmd = exec.Command(binary, args...)
	l.cmd.Env = cleanEnv()
	ready := make(chan struct{})
	l.cmd.Stderr = &signalWriter{buf: l.stderr, line: "msg=learning", ready: ready}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.started = time.Now()
	t.Cleanup(func() {
		if l.cmd.ProcessState == nil {
			_ = l.cmd.Process.Kill()
			_ = l.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("learner stderr:\n%s", l.stderr.String())
		}
	})
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("no ready line (msg=learning) from the learner:\n%s", l.stderr.String())
	}
	return l
}

// signalWriter closes ready the first time what was written contains
// line: the learner's ready line.
type signalWriter struct {
	buf   *lab.Buffer
	line  string
	ready chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.line) {
		w.once.Do(func() { close(w.ready) })
	}
	return n, err
}

// stop stops the learner with SIGTERM and returns the runs it recorded.
func (l *learnerLab) stop(t *testing.T) []store.Run {
	t.Helper()
	if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Wait(); err != nil {
		t.Fatalf("learner after SIGTERM: %v\n%s", err, l.stderr.String())
	}
	st, err := store.Open(l.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runs, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func (l *learnerLab) report(t *testing.T) []learn.ReportFlow {
	t.Helper()
	out, stderr, err := runCLI(nil, "report", "--db", l.db, "--json")
	if err != nil {
		t.Fatalf("report: %v\n%s", err, stderr)
	}
	var rows []learn.ReportFlow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("report --json is not a JSON array of flows: %v\n%s", err, out)
	}
	return rows
}

func hasFlow(rows []learn.ReportFlow, uid uint32, proto, ip string, port uint16) bool {
	for _, r := range rows {
		if r.UID == uid && r.Proto == proto && r.IP == ip && r.Port == port {
			return true
		}
	}
	return false
}

// TestReportWhileLearning: reports run against the store while the
// learner flushes every 200 ms, back to back, until one has seen the flow
// (and at least 25 ran); none fails (a report that cannot get the store's
// lock within its wait fails) or hangs. SIGTERM then stops the learner
// with exit 0.
func TestReportWhileLearning(t *testing.T) {
	l := startLearner(t)
	var reports, curls int
	var slowest time.Duration
	seen := false
	deadline := time.Now().Add(time.Minute)
	for ; reports < 25 || !seen; reports++ {
		if time.Now().After(deadline) {
			t.Fatalf("no report saw the flow in %d reports", reports)
		}
		if reports%5 == 0 && curls < 5 {
			l.client.MustRun(t, "curl", "-sS", "-4", "http://10.77.0.1:8080/")
			curls++
		}
		start := time.Now()
		rows := l.report(t)
		slowest = max(slowest, time.Since(start))
		if hasFlow(rows, 65534, "tcp", "10.77.0.1", 8080) {
			seen = true
			for _, r := range rows {
				if r.User != "nobody" || r.Hits == 0 || len(r.Processes) == 0 || r.FirstSeen.IsZero() {
					t.Errorf("row %+v", r)
				}
			}
		}
	}
	t.Logf("%d reports while learning, slowest %v", reports, slowest)

	runs := l.stop(t)
	if len(runs) != 1 || !runs[0].Finished || runs[0].Events != uint64(curls) {
		t.Errorf("runs after SIGTERM = %+v", runs)
	}
	if !strings.Contains(l.stderr.String(), "learning stopped") {
		t.Errorf("no summary line on exit:\n%s", l.stderr.String())
	}
	table, _, err := runCLI(nil, "report", "--db", l.db)
	if err != nil || !strings.Contains(table, "user nobody (uid 65534)") || !strings.Contains(table, "tcp/8080") {
		t.Errorf("table report (err %v):\n%s", err, table)
	}
}

// TestKilledLearnerKeepsFlushes: after SIGKILL the store opens cleanly
// with what was flushed, and the next run adds to it.
func TestKilledLearnerKeepsFlushes(t *testing.T) {
	l := startLearner(t)
	l.client.MustRun(t, "curl", "-sS", "-4", "http://10.77.0.1:8080/")
	lab.WaitFor(t, func() bool { return hasFlow(l.report(t), 65534, "tcp", "10.77.0.1", 8080) })
	_ = l.cmd.Process.Signal(syscall.SIGKILL)
	_ = l.cmd.Wait()

	if !hasFlow(l.report(t), 65534, "tcp", "10.77.0.1", 8080) {
		t.Fatal("the flushed flow is gone after SIGKILL")
	}
	_, stderr, err := runCLI(nil, "run", "--cgroup", l.cgroup.Path, "--db", l.db, "--duration", "300ms")
	if err != nil {
		t.Fatalf("a new run on the store after SIGKILL: %v\n%s", err, stderr)
	}
	st, _ := store.Open(l.db, store.Options{})
	runs, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Finished || !runs[1].Finished {
		t.Errorf("runs = %+v, want the killed one unfinished and the next finished", runs)
	}
}

// TestDurationStopsByItself: --duration ends the run with exit 0.
func TestDurationStopsByItself(t *testing.T) {
	lab.Require(t)
	cg := lab.NewCgroup(t)
	db := filepath.Join(t.TempDir(), "d.db")
	start := time.Now()
	_, stderr, err := runCLI(nil, "run", "--cgroup", cg.Path, "--db", db, "--duration", "1s")
	if err != nil {
		t.Fatalf("run --duration 1s: %v\n%s", err, stderr)
	}
	if el := time.Since(start); el < time.Second || el > 10*time.Second {
		t.Errorf("run --duration 1s took %v", el)
	}
	st, err := os.Stat(db)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("store %s: %v, mode %v", db, err, st.Mode())
	}
}

// TestConfigFileAndEnvironment: settings from a file, overridden by the
// environment, overridden by flags.
func TestConfigFileAndEnvironment(t *testing.T) {
	lab.Require(t)
	cg := lab.NewCgroup(t)
	dir := t.TempDir()
	fileDB := filepath.Join(dir, "from-file.db")
	envDB := filepath.Join(dir, "from-env.db")
	flagDB := filepath.Join(dir, "from-flag.db")
	conf := filepath.Join(dir, "config.yaml")
	content := "db: " + fileDB + "\ncgroup: " + cg.Path + "\nflush_interval: 1s\nignore_ports: [22, 53]\nignore_users: [nobody]\nignore_cidrs: [192.0.2.0/24]\n"
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) {
		t.Helper()
		_, stderr, err := runCLI(env, append([]string{"run", "--config", conf, "--duration", "200ms"}, args...)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
	}
	run(nil)
	run([]string{"EGRESS_DB=" + envDB})
	run([]string{"EGRESS_DB=" + envDB}, "--db", flagDB)
	run([]string{"EGRESS_CONFIG=" + conf})
	for _, p := range []string{fileDB, envDB, flagDB} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was not used: %v", filepath.Base(p), err)
		}
	}
}

// TestLearnerMetrics: run --metrics-addr serves the learner's figures;
// scraped over HTTP and parsed with the Prometheus parser, they match
// what the clients did.
func TestLearnerMetrics(t *testing.T) {
	addr := lab.FreeAddr(t)
	l := startLearner(t, "--metrics-addr", addr)
	for range 3 {
		l.client.MustRun(t, "curl", "-sS", "-4", "http://10.77.0.1:8080/")
	}
	var fams map[string]*dto.MetricFamily
	lab.WaitFor(t, func() bool {
		fams = lab.Scrape(t, "http://"+addr+"/metrics")
		v, _ := lab.MetricValue(fams, "egress_learn_events_total", nil)
		return v >= 3
	})
	if v, _ := lab.MetricValue(fams, "egress_learn_events_total", nil); v != 3 {
		t.Errorf("events %v, want 3 connects", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_learn_flows", nil); v != 1 {
		t.Errorf("flows %v, want 1", v)
	}
	if v, ok := lab.MetricValue(fams, "egress_learn_lost_events_total", nil); !ok || v != 0 {
		t.Errorf("lost events %v (present %v)", v, ok)
	}
	if v, ok := lab.MetricValue(fams, "egress_learn_seconds_since_last_new_flow", nil); !ok || v < 0 || v > 30 {
		t.Errorf("seconds since the last new flow %v (present %v)", v, ok)
	}
	if v, _ := lab.MetricValue(fams, "egress_learn_new_flows_last_minute", nil); v != 1 {
		t.Errorf("new flows in the last minute %v", v)
	}
}
