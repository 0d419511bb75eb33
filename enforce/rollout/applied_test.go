//go:build linux

package rollout

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

func TestAppliedDir(t *testing.T) {
	for target, want := range map[string]string{
		"":                "egress@host",
		"/run/netns/lab1": "egress@netns-lab1",
		"/proc/1/ns/net":  "egress@ns-",
		"/run/netns/../x": "egress@ns-",
	} {
		got := AppliedDir("/var/lib/egress/baseline.db", target, "egress")
		dir, base := filepath.Split(got)
		if dir != "/var/lib/egress/baseline.db.applied/" || !strings.HasPrefix(base, want) || strings.Contains(base, "/") {
			t.Errorf("AppliedDir(%q) = %q, want .../%s...", target, got, want)
		}
	}
	if AppliedDir("db", "/proc/1/ns/net", "egress") == AppliedDir("db", "/proc/2/ns/net", "egress") {
		t.Error("two namespaces share a folder")
	}
}

// TestWriteApplied: state.json and the plans it names, private files,
// nothing else left behind; a pending current generation restores the
// kept one; plans no longer named are removed; a plan already written is
// not rendered again.
func TestWriteApplied(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "baseline.db.applied", "egress@host")
	plans := map[uint64]*plan.Plan{
		1: plan.Build([]store.Flow{plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, plantest.T0)}, plan.Options{Mode: plan.ModeAudit, Now: plantest.T0}),
		3: plan.Build([]store.Flow{plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, plantest.T0), plantest.Flow(0, plan.ProtoUDP, "192.0.2.2", 53, 1, plantest.T0)}, plan.Options{Mode: plan.ModeEnforce, Now: plantest.T0}),
	}
	var rendered []uint64
	planOf := func(n uint64) (*plan.Plan, []byte, []byte, error) {
		rendered = append(rendered, n)
		return plans[n], nil, nil, nil
	}

	pending := AppliedState{Target: "", Table: "egress",
		Current: &AppliedGen{N: 3, Plan: 3, Mode: "enforce", State: store.GenPending},
		Kept:    &AppliedGen{N: 2, Plan: 1, Mode: "audit", State: store.GenApplied}}
	if err := writeApplied(dir, pending, planOf); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"index-1.bin", "index-3.bin", "plan-1.json", "plan-1.nft", "plan-3.json", "plan-3.nft", "state.json"}) {
		t.Errorf("files: %v", got)
	}
	s, err := ReadApplied(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Restorable(); r == nil || r.N != 2 || r.Plan != 1 {
		t.Errorf("with generation 3 pending, restore would put back %+v, want generation 2 (plan 1)", r)
	}
	p, err := readAppliedPlan(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(p)
	b, _ := json.Marshal(plans[3])
	if string(a) != string(b) {
		t.Errorf("plan-3.json reads back as another plan")
	}
	text, _ := os.ReadFile(filepath.Join(dir, "plan-3.nft"))
	if string(text) != plans[3].String() {
		t.Errorf("plan-3.nft is not the plan's script")
	}

	// Generation 3 is confirmed: plan-1 goes; nothing is rendered again.
	rendered = nil
	confirmed := AppliedState{Table: "egress",
		Current: &AppliedGen{N: 3, Plan: 3, Mode: "enforce", State: store.GenConfirmed},
		Kept:    &AppliedGen{N: 3, Plan: 3, Mode: "enforce", State: store.GenConfirmed}}
	if err := writeApplied(dir, confirmed, planOf); err != nil {
		t.Fatal(err)
	}
	if len(rendered) != 0 {
		t.Errorf("plans rendered again: %v", rendered)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"index-3.bin", "plan-3.json", "plan-3.nft", "state.json"}) {
		t.Errorf("files: %v", got)
	}
	if s, _ := ReadApplied(dir); s.Restorable().N != 3 {
		t.Errorf("restorable %+v", s.Restorable())
	}

	// A removal names no plan.
	removed := AppliedState{Table: "egress", Current: &AppliedGen{N: 4, Mode: ModeRemoved, State: store.GenApplied}}
	removed.Kept = removed.Current
	if err := writeApplied(dir, removed, planOf); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"state.json"}) {
		t.Errorf("files: %v", got)
	}
	if _, err := ReadApplied(filepath.Join(dir, "nothing")); !isNotExist(err) {
		t.Errorf("a missing state.json: %v", err)
	}
}

// names lists dir, checking every file is 0600, the folder 0700, and no
// temporary file is left.
func names(t *testing.T, dir string) []string {
	t.Helper()
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v %v", dir, info.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", e.Name(), info.Mode())
		}
		out = append(out, e.Name())
	}
	return out
}
