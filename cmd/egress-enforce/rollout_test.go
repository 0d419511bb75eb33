package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
)

// rolloutLab: a server namespace with HTTP on 8080 and 8081 and a UDP
// sink on 9999; a client namespace for the table; a store whose baseline
// has nobody reaching 8080 and uid 4242 sending UDP to 9999.
type rolloutLab struct {
	pair   *lab.Pair
	db     string
	env    []string
	nobody lab.As
	other  lab.As
}

func newRolloutLab(t *testing.T) *rolloutLab {
	t.Helper()
	lab.Require(t, "nft", "curl", "socat", "bash")
	pair := lab.NewPair(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	lab.ListenUDP(t, pair.Server, ":9999")
	db := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	flow := func(uid uint32, proto uint8, port uint16) store.Flow {
		return store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: proto, IP: netip.MustParseAddr(lab.ServerIP4), Port: port},
			Hits: 3, FirstSeen: now, LastSeen: now, Processes: []string{"curl"}}
	}
	if err := st.Apply(&store.Batch{Flows: []store.Flow{flow(65534, 6, 8080), flow(4242, 17, 9999)}}); err != nil {
		t.Fatal(err)
	}
	l := &rolloutLab{
		pair: pair, db: db,
		env: []string{"EGRESS_DB=" + db, "EGRESS_NETNS=" + pair.Client.Name,
			"EGRESS_RESOLV_CONF=/etc/netns/" + pair.Client.Name + "/resolv.conf", "EGRESS_NFLOG_GROUP=88"},
		nobody: lab.As{UID: 65534, GID: 65534, Netns: pair.Client},
		other:  lab.As{UID: 4242, GID: 4242, Netns: pair.Client},
	}
	t.Cleanup(func() { l.stopGuards() })
	return l
}

func (l *rolloutLab) run(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, enforceBin, l.env, args...)
}

func (l *rolloutLab) history(t *testing.T) ([]store.Generation, uint64) {
	t.Helper()
	var h struct {
		Current     uint64             `json:"current"`
		Generations []store.Generation `json:"generations"`
	}
	if err := json.Unmarshal([]byte(l.run(t, "history", "--json")), &h); err != nil {
		t.Fatal(err)
	}
	return h.Generations, h.Current
}

func (l *rolloutLab) status(t *testing.T) status {
	t.Helper()
	var st status
	if err := json.Unmarshal([]byte(l.run(t, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// stopGuards kills guard processes the test left running.
func (l *rolloutLab) stopGuards() {
	st, err := store.Open(l.db, store.Options{})
	if err != nil {
		return
	}
	gens, _ := st.Generations()
	for _, g := range gens {
		if g.GuardPID > 0 {
			_ = syscall.Kill(g.GuardPID, syscall.SIGKILL)
		}
	}
}

// reaches reports whether a's connection to the server's port goes
// through. It is for flows that should pass: the time limit is generous,
// so a slow machine does not make an allowed flow look blocked.
func reaches(a lab.As, port int) bool {
	_, err := a.Run("curl", "-sS", "--max-time", "30", fmt.Sprintf("http://%s:%d/", lab.ServerIP4, port))
	return err == nil
}

// cannotReach reports whether a's connection to the server's port fails
// within 2 s. It is for flows that should be dropped: a dropped SYN never
// completes, so the limit only bounds the wait.
func cannotReach(a lab.As, port int) bool {
	_, err := a.Run("curl", "-sS", "--max-time", "2", fmt.Sprintf("http://%s:%d/", lab.ServerIP4, port))
	return err != nil
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// waitUntil polls cond until it holds. d only bounds a test that would
// otherwise hang: it is generous, never a speed requirement.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestConfirmKeepsTheTable(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	// A window long enough for any machine: what keeps the table is the
	// confirm and the guard's exit, not the clock.
	out := l.run(t, "apply", "--mode", "enforce", "--confirm-within", "10m", "--reason", "go live")
	if !strings.Contains(out, "egress-enforce confirm") || !strings.Contains(out, "rolls back to generation 1") {
		t.Errorf("apply --confirm-within says:\n%s", out)
	}
	gens, _ := l.history(t)
	guard := gens[1].GuardPID
	if !alive(guard) {
		t.Fatalf("no guard process running (pid %d)", guard)
	}
	if out := l.run(t, "confirm"); !strings.Contains(out, "confirmed generation 2") {
		t.Errorf("confirm: %s", out)
	}
	// The guard is the only one that rolls back: once it has exited after
	// seeing the confirmation, nothing will.
	waitUntil(t, waitFor, "the guard to exit", func() bool { return !alive(guard) })
	if log := guardLog(t, l, 2); !strings.Contains(log, "is confirmed: nothing to roll back") || strings.Contains(log, "level=ERROR") {
		t.Errorf("guard log:\n%s", log)
	}
	if st := l.status(t); st.Mode != plan.ModeEnforce {
		t.Errorf("after confirm the mode is %s", st.Mode)
	}
	gens, cur := l.history(t)
	if cur != 2 || gens[1].State != store.GenConfirmed || gens[1].Reason != "go live" || len(gens) != 2 {
		t.Errorf("history: current %d, %+v", cur, gens)
	}
	if !cannotReach(l.nobody, 8081) {
		t.Error("the confirmed enforcing table lets an unlearned flow through")
	}
	mustFail(t, enforceBin, l.env, []string{"already confirmed"}, "confirm")
}

func TestNoConfirmRollsBack(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	before := time.Now()
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "3s")
	waitUntil(t, waitFor, "the rollback", func() bool { _, cur := l.history(t); return cur == 3 })
	if st := l.status(t); st.Mode != plan.ModeAudit || !reaches(l.nobody, 8081) {
		t.Errorf("after the rollback the table is in %s mode", st.Mode)
	}
	gens, cur := l.history(t)
	if len(gens) != 3 || cur != 3 || gens[1].State != store.GenRolledBack || !strings.Contains(gens[1].Note, "not confirmed within 3s") ||
		gens[2].Restores != 1 || !strings.Contains(gens[2].Reason, "automatic rollback of generation 2") {
		t.Fatalf("history: current %d, %+v", cur, gens)
	}
	// The window started when the table was in, and the rollback came
	// after it closed.
	if start := gens[1].Deadline.Add(-3 * time.Second); start.Before(gens[1].Time) || start.Before(before) {
		t.Errorf("the window started at %s, before the generation was recorded (%s)", start, gens[1].Time)
	}
	if gens[2].Time.Before(gens[1].Deadline) {
		t.Errorf("rolled back at %s, before the deadline %s", gens[2].Time, gens[1].Deadline)
	}
	mustFail(t, enforceBin, l.env, []string{"already rolled back"}, "confirm")
}

// TestKilledApplyStillRollsBack: SIGKILL of the apply process (and its
// whole process group, as when the terminal goes) does not stop the
// rollback: the guard lives in a session of its own.
func TestKilledApplyStillRollsBack(t *testing.T) {
	for _, when := range []string{"after the guard started", "after apply printed"} {
		t.Run(when, func(t *testing.T) {
			l := newRolloutLab(t)
			l.run(t, "apply", "--mode", "audit")
			cmd := exec.Command(enforceBin, "apply", "--mode", "enforce", "--confirm-within", "2s")
			cmd.Env = append(os.Environ(), l.env...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if when == "after the guard started" {
				st, _ := store.Open(l.db, store.Options{})
				waitUntil(t, waitFor, "the guard's pid in the store", func() bool {
					gens, _ := st.Generations()
					return len(gens) == 2 && gens[1].GuardPID != 0
				})
			} else {
				line, _ := bufio.NewReader(stdout).ReadString('\n')
				if !strings.Contains(line, "applied generation 2") {
					t.Fatalf("apply said %q", line)
				}
			}
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			waitUntil(t, waitFor, "the rollback", func() bool {
				gens, cur := l.history(t)
				return cur == 3 && gens[1].State == store.GenRolledBack
			})
			if st := l.status(t); st.Mode != plan.ModeAudit {
				t.Errorf("after the rollback the mode is %s", st.Mode)
			}
		})
	}
}

func TestRollbackToAGeneration(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")                              // 1
	l.run(t, "apply", "--mode", "enforce")                            // 2
	l.run(t, "apply", "--mode", "enforce", "--enforce-users", "4242") // 3
	if out := l.run(t, "rollback", "--to", "1"); !strings.Contains(out, "restored generation 1 as generation 4") {
		t.Errorf("rollback --to 1: %s", out)
	}
	if st := l.status(t); st.Mode != plan.ModeAudit {
		t.Errorf("after rollback --to 1: %s", st.Mode)
	}
	// The default goes back to the newest earlier table that differs: 3.
	if out := l.run(t, "rollback"); !strings.Contains(out, "restored generation 3 as generation 5") {
		t.Errorf("rollback: %s", out)
	}
	if st := l.status(t); st.Mode != plan.ModeStaged || len(st.EnforceUIDs) != 1 || st.EnforceUIDs[0] != 4242 {
		t.Errorf("after rollback to 3: %+v", st)
	}
	var d plan.Diff
	if err := json.Unmarshal([]byte(l.run(t, "diff", "--json", "--mode", "enforce", "--enforce-users", "4242")), &d); err != nil || !d.Empty() {
		t.Errorf("the restored table differs from generation 3's plan: %+v %v", d, err)
	}
	mustFail(t, enforceBin, l.env, []string{"generation 9", "no such generation"}, "rollback", "--to", "9")

	// With no earlier generation, rollback removes the table.
	other := newRolloutLab(t)
	other.run(t, "apply", "--mode", "audit")
	if out := other.run(t, "rollback"); !strings.Contains(out, "removed table inet egress") {
		t.Errorf("rollback of the only generation: %s", out)
	}
	if st := other.status(t); st.Present {
		t.Error("the table is still there")
	}
}

// TestStagedEnforcement: one user enforced, the other only audited.
func TestStagedEnforcement(t *testing.T) {
	l := newRolloutLab(t)
	w := startWatch(t, l)
	l.run(t, "apply", "--mode", "enforce", "--enforce-users", "nobody")
	st := l.status(t)
	if st.Mode != plan.ModeStaged || len(st.EnforceUIDs) != 1 || st.EnforceUIDs[0] != 65534 || st.Policy != "accept" {
		t.Errorf("status: %+v", st)
	}
	if human := l.run(t, "status"); !strings.Contains(human, "enforced: nobody") || !strings.Contains(human, "audited: everyone else") {
		t.Errorf("status does not say who is in which mode:\n%s", human)
	}
	if !cannotReach(l.nobody, 8081) {
		t.Error("the enforced user reached an unlearned destination")
	}
	if !reaches(l.nobody, 8080) {
		t.Error("the enforced user's learned flow is blocked")
	}
	if !reaches(l.other, 8081) {
		t.Error("the audited user was blocked")
	}
	entries := w.waitEntries(t, func(es []monitor.LogEntry) bool {
		return hasEntry(es, "drop", 65534, 8081) && hasEntry(es, "audit", 4242, 8081)
	})
	for _, e := range entries {
		if e.UID != nil && *e.UID == 4242 && e.Action == "drop" {
			t.Errorf("the audited user's packet was dropped: %+v", e)
		}
	}

	// The reverse: everyone enforced but uid 4242.
	l.run(t, "apply", "--mode", "enforce", "--audit-users", "4242")
	if st := l.status(t); st.Mode != plan.ModeStaged || len(st.AuditUIDs) != 1 || st.Policy != "drop" {
		t.Errorf("status with --audit-users: %+v", st)
	}
	if !reaches(l.other, 8081) || !cannotReach(l.nobody, 8081) {
		t.Error("--audit-users 4242 does not let 4242 through and drop nobody")
	}
	mustFail(t, enforceBin, l.env, []string{"exclude each other"}, "apply", "--mode", "enforce", "--enforce-users", "1", "--audit-users", "2")
	mustFail(t, enforceBin, l.env, []string{"--mode enforce"}, "apply", "--mode", "audit", "--enforce-users", "1")
	mustFail(t, enforceBin, l.env, []string{"no-such-user"}, "apply", "--mode", "enforce", "--enforce-users", "no-such-user")
}

func hasEntry(es []monitor.LogEntry, action string, uid uint32, port uint16) bool {
	for _, e := range es {
		if e.Action == action && e.UID != nil && *e.UID == uid && e.Port == port && e.Dst == netip.MustParseAddr(lab.ServerIP4) {
			return true
		}
	}
	return false
}

type watcher struct {
	cmd     *exec.Cmd
	metrics string
	out     *lab.Buffer
	stderr  *lab.Buffer
}

// startWatch runs "egress-enforce watch --json" with metrics on a free port.
func startWatch(t *testing.T, l *rolloutLab) *watcher {
	t.Helper()
	addr := lab.FreeAddr(t)
	w := &watcher{metrics: "http://" + addr + "/metrics"}
	w.cmd, w.out, w.stderr = start(t, l.env, enforceBin, "watch", "--json", "--metrics-addr", addr, "--flush-interval", "200ms", "--metrics-refresh", "100ms")
	lab.WaitFor(t, func() bool { return strings.Contains(w.stderr.String(), "msg=watching") })
	return w
}

func (w *watcher) entries(t *testing.T) []monitor.LogEntry {
	t.Helper()
	var out []monitor.LogEntry
	for _, line := range strings.Split(strings.TrimSpace(w.out.String()), "\n") {
		if line == "" {
			continue
		}
		var e monitor.LogEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("watch --json printed %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

func (w *watcher) waitEntries(t *testing.T, cond func([]monitor.LogEntry) bool) []monitor.LogEntry {
	t.Helper()
	var es []monitor.LogEntry
	waitUntil(t, waitFor, "the monitor's entries", func() bool { es = w.entries(t); return cond(es) })
	return es
}

func (w *watcher) stop(t *testing.T) {
	t.Helper()
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("watch after SIGTERM: %v\n%s", err, w.stderr.String())
	}
}

// TestMonitorMetricsAndDenied: the monitor attributes drops to the right
// user and destination, its metrics (scraped over HTTP, parsed with the
// Prometheus parser) match the kernel's counters, and "denied --json"
// matches what the clients did.
func TestMonitorMetricsAndDenied(t *testing.T) {
	l := newRolloutLab(t)
	w := startWatch(t, l)
	l.run(t, "apply", "--mode", "enforce")
	applied, _ := l.history(t)
	for range 3 {
		if !cannotReach(l.nobody, 8081) {
			t.Fatal("an unlearned flow went through")
		}
	}
	_, _ = l.other.Run("bash", "-c", fmt.Sprintf("for i in 1 2 3 4; do echo x > /dev/udp/%s/9998; done", lab.ServerIP4))
	if !reaches(l.nobody, 8080) {
		t.Fatal("a learned flow was blocked")
	}
	// Every drop is logged (NFLOG); the kernel's counter says how many.
	es := w.waitEntries(t, func(es []monitor.LogEntry) bool {
		drops := 0
		for _, e := range es {
			if e.Action == "drop" {
				drops++
			}
		}
		return hasEntry(es, "drop", 65534, 8081) && hasEntry(es, "drop", 4242, 9998) && uint64(drops) == l.status(t).Dropped.Packets
	})
	syns, udp := countLogged(t, es)
	st, fams := waitForMetrics(t, l, w, syns+udp)
	checkMetrics(t, fams, st, syns, applied[0].Time)
	w.stop(t) // flushes the observations
	checkDenied(t, l, syns, udp)
}

// countLogged counts nobody's SYNs to 8081 and uid 4242's datagrams to
// 9998 among the logged packets; a learned flow must not be there.
func countLogged(t *testing.T, es []monitor.LogEntry) (syns, udp float64) {
	for _, e := range es {
		switch {
		case e.UID != nil && *e.UID == 65534 && e.Port == 8081 && e.Proto == 6:
			syns++
		case e.UID != nil && *e.UID == 4242 && e.Port == 9998 && e.Proto == 17:
			udp++
		case e.UID != nil && *e.UID == 65534 && e.Port == 8080:
			t.Errorf("a learned flow was logged: %+v", e)
		}
	}
	if udp != 4 {
		t.Errorf("%v UDP drops logged for uid 4242, want 4", udp)
	}
	return syns, udp
}

// waitForMetrics waits for a scrape that counts every logged drop.
func waitForMetrics(t *testing.T, l *rolloutLab, w *watcher, logged float64) (status, map[string]*dto.MetricFamily) {
	// Scrapes serve the last gathering (every --metrics-refresh): wait for
	// one taken after the drops were counted and logged.
	var st status
	var fams map[string]*dto.MetricFamily
	var kernel float64
	waitUntil(t, waitFor, "the metrics to count every logged drop", func() bool {
		st = l.status(t)
		fams = lab.Scrape(t, w.metrics)
		v, _ := lab.MetricValue(fams, "egress_denied_packets_total", map[string]string{"action": "drop"})
		kernel, _ = lab.MetricValue(fams, "egress_kernel_dropped_packets_total", nil)
		return v == logged && kernel == float64(st.Dropped.Packets)
	})
	if kernel != float64(st.Dropped.Packets) || kernel != logged {
		t.Errorf("kernel drop counter: metric %v, status %d, logged %v", kernel, st.Dropped.Packets, logged)
	}
	return st, fams
}

// checkMetrics compares the metrics with the kernel's counters and what
// the clients did.
func checkMetrics(t *testing.T, fams map[string]*dto.MetricFamily, st status, syns float64, applied time.Time) {
	kernel, _ := lab.MetricValue(fams, "egress_kernel_dropped_packets_total", nil)
	rule, _ := lab.MetricValue(fams, "egress_rule_packets_total", map[string]string{"rule": "default enforce: everyone"})
	if rule != float64(st.Dropped.Packets) {
		t.Errorf("rule counter metric %v, kernel %d", rule, st.Dropped.Packets)
	}
	monitored, _ := lab.MetricValue(fams, "egress_denied_packets_total", map[string]string{"action": "drop"})
	if monitored != kernel {
		t.Errorf("the monitor counted %v drops, the kernel %v", monitored, kernel)
	}
	if v, _ := lab.MetricValue(fams, "egress_denied_packets_total", map[string]string{"uid": "65534", "user": "nobody", "destination": lab.ServerIP4, "port": "8081", "proto": "tcp"}); v != syns {
		t.Errorf("metric for nobody -> 8081 = %v, logged %v", v, syns)
	}
	if v, _ := lab.MetricValue(fams, "egress_denied_packets_by_user_total", map[string]string{"uid": "4242", "action": "drop"}); v != 4 {
		t.Errorf("by-user metric for 4242 = %v, want 4", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_set_elements", map[string]string{"set": "allow4"}); v != 2 {
		t.Errorf("set elements metric %v, want 2", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_generation", nil); v != 1 {
		t.Errorf("generation metric %v", v)
	}
	if v, ok := lab.MetricValue(fams, "egress_table_mode", map[string]string{"mode": "enforce"}); !ok || v != 1 {
		t.Errorf("mode metric %v %v", v, ok)
	}
	if v, _ := lab.MetricValue(fams, "egress_last_apply_timestamp_seconds", nil); int64(v) != applied.Unix() {
		t.Errorf("last apply metric %v, generation 1 applied at %s", v, applied)
	}

}

// checkDenied: "denied" reports what the clients did.
func checkDenied(t *testing.T, l *rolloutLab, syns, udp float64) {
	var sum monitor.DeniedSummary
	if err := json.Unmarshal([]byte(l.run(t, "denied", "--json")), &sum); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, d := range sum.Destinations {
		got[fmt.Sprintf("%d %s %s:%d", d.UID, d.Proto, d.IP, d.Port)] = d.Dropped
	}
	want := map[string]uint64{
		fmt.Sprintf("65534 tcp %s:8081", lab.ServerIP4): uint64(syns),
		fmt.Sprintf("4242 udp %s:9998", lab.ServerIP4):  4,
	}
	if len(got) != len(want) {
		t.Errorf("denied destinations %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("denied %s: %d, want %d", k, got[k], v)
		}
	}
	if sum.Dropped != uint64(syns+udp) || len(sum.Users) != 2 || sum.Rate == nil || sum.Rate.Generation != 1 || sum.Rate.DropAfter != uint64(syns+udp) {
		t.Errorf("summary: %+v rate %+v", sum, sum.Rate)
	}
	human := l.run(t, "denied")
	lab.WantAll(t, "denied", human, "most denied destinations", "nobody", "udp/9998", "last apply: generation 1")
}

// TestDeniedRateRollsBackEarly: a burst of drops during the confirm
// window rolls back before the deadline, and says why.
func TestDeniedRateRollsBackEarly(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	// The deadline is far: only the rate guard can roll back in time.
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "30m", "--rollback-if-denied-rate", "5/s")
	burst := fmt.Sprintf("for i in $(seq 20); do echo x > /dev/udp/%s/9997; done", lab.ServerIP4)
	waitUntil(t, waitFor, "the early rollback", func() bool {
		_, _ = l.other.Run("bash", "-c", burst) // bursts until it happens, however fast the machine
		return l.status(t).Mode == plan.ModeAudit
	})
	gens, _ := l.history(t)
	if gens[1].State != store.GenRolledBack || !strings.Contains(gens[1].Note, "above --rollback-if-denied-rate 5/s") {
		t.Errorf("the rollback does not say why: %+v", gens[1])
	}
	mustFail(t, enforceBin, l.env, []string{"needs --confirm-within"}, "apply", "--mode", "enforce", "--rollback-if-denied-rate", "5/s")
	mustFail(t, enforceBin, l.env, []string{"not a rate"}, "apply", "--mode", "enforce", "--confirm-within", "1m", "--rollback-if-denied-rate", "lots")
}

// waitFor is how long a test waits for a signal before it gives up: a
// bound against hanging, never a speed requirement.
const waitFor = 2 * time.Minute

// guardLog is the log of generation n's guard.
func guardLog(t *testing.T, l *rolloutLab, n uint64) string {
	t.Helper()
	data, _ := os.ReadFile(filepath.Join(filepath.Dir(l.db), fmt.Sprintf("guard-%d.log", n)))
	return string(data)
}

// listing is our table in the client namespace, canonical.
func (l *rolloutLab) listing(t *testing.T) string {
	t.Helper()
	return lab.ListTable(t, l.pair.Client, "egress")
}

// reboot does to the lab what a reboot does to a host: the guards die and
// nftables forgets our table.
func (l *rolloutLab) reboot(t *testing.T) {
	t.Helper()
	gens, _ := l.history(t)
	for _, g := range gens {
		if g.GuardPID > 0 {
			_ = syscall.Kill(g.GuardPID, syscall.SIGKILL)
			waitUntil(t, waitFor, "the guard to die", func() bool { return gone(g.GuardPID) })
		}
	}
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	if st := l.status(t); st.Present {
		t.Fatal("the table survived the simulated reboot")
	}
}

// gone: no such process, or a zombie.
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}
