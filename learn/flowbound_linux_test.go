//go:build linux

package learn

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
)

// TestLearnerFlowFloodIsBounded: a local user (4242) in the learner's
// cgroup sends a datagram to 60 ports of a server, a new flow each; with
// the bound of a user's flows lowered to 20, the learner records 20 of
// them and counts the other attempts in the run (flows_unrecorded), and
// another user's flow (65534) is still recorded.
func TestLearnerFlowFloodIsBounded(t *testing.T) {
	lab.Require(t, "bash", "curl")
	savedFlows, savedUser := maxFlows, maxUserFlows
	maxFlows, maxUserFlows = 1000, 20
	t.Cleanup(func() { maxFlows, maxUserFlows = savedFlows, savedUser })
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	db := filepath.Join(t.TempDir(), "baseline.db")
	r := startRun(t, Config{DB: db, Cgroup: cg.Path, Flush: 200 * time.Millisecond, Drain: 100 * time.Millisecond,
		Filter: Filter{Loopback: true}, Probe: DefaultProbeOptions(), NoPresentedNames: true})

	const ports = 60
	attacker := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	attacker.MustRun(t, "bash", "-c", fmt.Sprintf("for p in $(seq 20000 %d); do echo x > /dev/udp/%s/$p; done", 20000+ports-1, lab.ServerIP4))
	victim := lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg}
	victim.MustRun(t, "curl", "-sS", "-4", "http://"+lab.ServerIP4+":8080/")
	sum := r.stop(t)

	flows, _ := flowsOf(t, db)
	n := 0
	for k := range flows {
		if strings.HasPrefix(k, "4242 udp ") {
			n++
		}
	}
	if n != 20 {
		t.Errorf("%d flows of the flooding user recorded, want its bound 20", n)
	}
	if _, ok := flows["65534 tcp "+lab.ServerIP4+":8080"]; !ok {
		t.Error("the other user's flow was not recorded")
	}
	if got := sum.Run.FlowsUnrecorded; got != ports-20 || sum.Status.FlowsUnrecordedUID != 4242 {
		t.Errorf("the run counts %d attempts unrecorded (last uid %d), want %d (4242)", got, sum.Status.FlowsUnrecordedUID, ports-20)
	}
}
