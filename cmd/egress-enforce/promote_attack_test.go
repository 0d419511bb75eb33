package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/promote"
	"github.com/egresskit/egress/internal/lab"
)

// TestPromoteFloodHidesNoPacket is an attack: uid 4242 floods the audit
// log past audit_log_rate (UDP datagrams to a destination it never used,
// each from a new socket) while nobody makes a connection the table audits.
// The kernel logs at most audit_log_rate packets a second, so nobody's
// packet most likely never reaches the log: a monitor that only counted
// what was logged would find nobody quiet and promote it, and its service
// would break once enforced. The watch reads the table's counters, which
// see every packet: the run records the packets the log left out, and
// promote keeps everyone in audit, saying why.
func TestPromoteFloodHidesNoPacket(t *testing.T) {
	l := newRolloutLab(t)
	noJobs := t.TempDir()
	if err := os.MkdirAll(noJobs+"/etc", 0o755); err != nil {
		t.Fatal(err)
	}
	l.env = append(l.env, "EGRESS_COVERAGE_ROOT="+noJobs, "EGRESS_FLUSH_INTERVAL=200ms", "EGRESS_AUDIT_LOG_RATE=1")
	l.run(t, "apply", "--mode", "audit")
	watch, _, werr := start(t, l.env, enforceBin, "watch", "--quiet")
	lab.Await(t, "the watch's run in the store", func() bool { return l.watchRun(t) != nil })

	flood := "for i in $(seq 300); do echo x >/dev/udp/" + lab.ServerIP4 + "/9998; done"
	l.other.MustRun(t, "bash", "-c", flood)
	if !reaches(l.nobody, 8081) {
		t.Fatal("audit mode dropped nobody's connection")
	}
	l.other.MustRun(t, "bash", "-c", flood)
	// The watch's last flush, at SIGTERM, reads the counters after the
	// flood.
	_ = watch.Process.Signal(syscall.SIGTERM)
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch: %v\n%s", err, werr.String())
	}
	run := l.watchRun(t)
	if !run.Finished || run.UnloggedAudit == 0 {
		t.Fatalf("the run does not count the packets the log left out: %+v", run)
	}
	p := l.promote(t, "--now", run.End.Format(time.RFC3339Nano), "--quiet-for", run.End.Sub(run.Start).String())
	victim := p.principal(t, 65534)
	if victim.Ready || len(p.Ready) != 0 || p.Monitor.Recorded {
		t.Fatalf("promoted in the flood: %+v; ready %v", victim, p.Ready)
	}
	found := false
	for _, r := range victim.Reasons {
		found = found || r.Kind == promote.ReasonMonitorIncomplete && strings.Contains(r.Text, "over audit_log_rate")
	}
	if !found {
		t.Errorf("nobody's reasons do not name the unlogged packets: %+v", victim.Reasons)
	}
}
