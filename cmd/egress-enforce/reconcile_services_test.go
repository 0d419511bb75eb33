package main

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestNewServiceWaitsForReconcile: with per-service rules, a destination
// approved for a.service and then tried by b.service (the table drops
// it, the learner records b's cgroup on the approved flow) is not let
// through by the next apply; reconcile proposes it for b.service ("new
// service"), and b reaches it once the proposal is applied.
func TestNewServiceWaitsForReconcile(t *testing.T) {
	h := newServiceHost(t, "match: user,service\n")
	a, b := h.parent.Child(t, "a.service"), h.parent.Child(t, "b.service")

	learner, lerr := startLearner(t, h.env, "--cgroup", h.parent.Path, "--flush-interval", "200ms")
	h.as(a).MustRun(t, "curl", "-sS", url8080)
	stopLearner(t, learner, lerr)
	mustRun(t, enforceBin, h.env, "apply", "--mode", "enforce")
	if err := blocked(t, h.as(b), url8080); err != nil {
		t.Fatalf("b.service before it was learned: %v", err)
	}

	learner, lerr = startLearner(t, h.env, "--cgroup", h.parent.Path, "--flush-interval", "200ms")
	_, _ = h.as(b).Run("curl", "-sS", "--max-time", "2", url8080) // dropped; the learner sees the connect
	stopLearner(t, learner, lerr)
	mustRun(t, enforceBin, h.env, "apply", "--mode", "enforce")
	if err := blocked(t, h.as(b), url8080); err != nil {
		t.Errorf("apply let a new service of an approved destination through unreviewed: %v", err)
	}

	var p struct {
		Additions []struct {
			Port     uint16   `json:"port"`
			Source   string   `json:"source"`
			Services []string `json:"services"`
		} `json:"additions"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, h.env, "reconcile", "--json")), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Additions) != 1 || p.Additions[0].Source != "new service" || p.Additions[0].Port != 8080 || !slices.Equal(p.Additions[0].Services, []string{b.Rel(t)}) {
		t.Fatalf("reconcile additions %+v", p.Additions)
	}
	lab.WantAll(t, "reconcile", mustRun(t, enforceBin, h.env, "reconcile"), "[new service]  service "+b.Rel(t))
	mustRun(t, enforceBin, h.env, "reconcile", "--apply", "--mode", "enforce")
	if err := reach(h.as(b), url8080); err != nil {
		t.Errorf("b.service once its addition was applied: %v", err)
	}
	if err := blocked(t, h.as(b), url8081); err != nil {
		t.Errorf("b.service to what it never used: %v", err)
	}
}
