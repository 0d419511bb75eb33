package main

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
	"github.com/egresskit/egress/store/storetest"
)

// monitoredStore writes a store with denied destinations seen 100 and 10
// days before now, and 5 generations with plans.
func monitoredStore(t *testing.T, now time.Time) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var obs []store.Observation
	for i, age := range []time.Duration{100 * 24 * time.Hour, 10 * 24 * time.Hour} {
		at := now.Add(-age)
		for j := range 50 {
			k := store.FlowKey{UID: 1000, Proto: 17, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i*50 + j)}), Port: 53}
			obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: k, Hits: 2, FirstSeen: at, LastSeen: at})
		}
	}
	if err := st.AddObservations(obs, map[int64]store.DenialCount{now.Add(-100*24*time.Hour).Unix() / 60: {Drop: 100},
		now.Add(-10*24*time.Hour).Unix() / 60: {Drop: 100}}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := st.AddGeneration(store.Generation{Time: now.Add(time.Duration(i-10) * time.Hour), Table: "egress", Mode: "audit",
			State: store.GenApplied}, []byte(`{"table":"egress"}`)); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestPruneCommand: prune deletes what is past the retention and the
// plans past keep_generations (keeping the current one), and denied then
// shows only what is left.
func TestPruneCommand(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	db := monitoredStore(t, now)
	env := []string{"EGRESS_DB=" + db, "EGRESS_KEEP_GENERATIONS=2"}
	var res store.PruneResult
	out := mustRun(t, enforceBin, env, "prune", "--json", "--now", now.Format(time.RFC3339))
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("prune --json: %q: %v", out, err)
	}
	if res.Observations != 50 || res.Denials != 1 || res.Plans != 3 {
		t.Errorf("pruned %+v, want 50 observations, 1 minute, 3 plans", res)
	}
	var sum monitor.DeniedSummary
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "denied", "--json")), &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Destinations) != 50 || sum.Dropped != 100 {
		t.Errorf("denied after prune: %d destinations, %d dropped", len(sum.Destinations), sum.Dropped)
	}
	if human := mustRun(t, enforceBin, env, "prune", "--now", now.Format(time.RFC3339)); !strings.Contains(human, "pruned 0 observations") {
		t.Errorf("a second prune: %s", human)
	}
	mustFail(t, enforceBin, append(env, "EGRESS_RETENTION=tomorrow"), []string{"retention", "tomorrow"}, "prune")
}

// TestCorruptStoreIsAnErrorNotACrash: a bucket whose root page points far
// beyond the file killed egress-enforce with SIGSEGV; now every command
// that reads it exits 1 with an error naming the file.
func TestCorruptStoreIsAnErrorNotACrash(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	db := monitoredStore(t, now)
	storetest.BreakBucketRoot(t, db, "observations")
	env := []string{"EGRESS_DB=" + db}
	mustFail(t, enforceBin, env, []string{db, "corrupt"}, "denied")
	mustFail(t, enforceBin, env, []string{db, "corrupt"}, "prune")
}
