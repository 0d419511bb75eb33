package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// learn adds a flow of uid to the lab's store, as the learner would.
func (l *rolloutLab) learn(t *testing.T, uid uint32, port uint16) {
	t.Helper()
	st, err := store.Create(l.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f := store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(lab.ServerIP4), Port: port},
		Hits: 1, FirstSeen: now, LastSeen: now, Processes: []string{"curl"}}
	if err := st.Apply(&store.Batch{Flows: []store.Flow{f}}); err != nil {
		t.Fatal(err)
	}
	// Approved, as a reviewed reconcile would (apply takes the approved
	// flows once there are some).
	if err := st.SetApproval([]store.FlowKey{f.FlowKey}, func(f *store.Flow) { f.Approved, f.ApprovedAt = 1, now }); err != nil {
		t.Fatal(err)
	}
}

// applyResult is what apply --json prints of a delta or a replace.
type applyResult struct {
	Generation uint64 `json:"generation"`
	Delta      *struct {
		From          uint64 `json:"from_generation"`
		ElementsAdded int    `json:"elements_added"`
	} `json:"delta"`
	FullReason    string `json:"full_reason"`
	KernelDiffers bool   `json:"kernel_differs"`
}

// TestApplyDeltaThroughTheCLI: the second apply changes the table as a
// delta and says so; the table is the one a full apply of the same store
// makes. When the kernel's table was changed by hand, apply replaces it
// whole and says so: a line on stdout, a warning in the log, and in the
// JSON.
func TestApplyDeltaThroughTheCLI(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	l.learn(t, 65534, 8081)
	out := l.run(t, "apply", "--mode", "audit")
	if !strings.Contains(out, "as a delta from generation 1: 1 elements added, 0 removed") {
		t.Errorf("second apply says:\n%s", out)
	}
	delta := l.listing(t)
	if !reaches(l.nobody, 8081) {
		t.Error("the flow the delta added is not allowed")
	}
	// The same store applied whole: another table, the same listing.
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	out = l.run(t, "apply", "--mode", "audit")
	if !strings.Contains(out, "the whole table was replaced: the table in the kernel was not the one the store says") {
		t.Errorf("apply after the table was deleted says:\n%s", out)
	}
	if full := l.listing(t); full != delta {
		t.Errorf("after the delta:\n%s\nafter a full apply:\n%s", delta, full)
	}

	// An element added by hand: apply replaces the table, says so, and
	// the element is gone.
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "add", "element", "inet", "egress", "allow4",
		"{ 4321 . "+lab.ServerIP4+" . tcp . 8081 }")
	l.learn(t, 4242, 8080)
	stdout, stderr, err := run(enforceBin, l.env, "apply", "--mode", "audit", "--json")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr)
	}
	var r applyResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("apply --json: %v\n%s", err, stdout)
	}
	if r.Delta != nil || !r.KernelDiffers || !strings.Contains(r.FullReason, "set allow4 holds 4 elements, generation 3 has 3") {
		t.Errorf("apply --json after an element was added by hand: %s", stdout)
	}
	if !strings.Contains(stderr, "the table in the kernel is not the one the store says") {
		t.Errorf("no warning in the log:\n%s", stderr)
	}
	if strings.Contains(l.listing(t), "4321") {
		t.Error("the element added by hand is still in the table")
	}
	// And the next apply is a delta again.
	l.learn(t, 4242, 8081)
	if out := l.run(t, "apply", "--mode", "audit"); !strings.Contains(out, "as a delta from generation 4") {
		t.Errorf("apply after the replace says:\n%s", out)
	}
}
