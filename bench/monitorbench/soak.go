//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

// soak feeds a store one simulated day at a time and records its file
// size; pruned, it prunes daily with the default retention and
// keep_generations, as watch does every hour.
func soak(db string, days int, pruned bool) (*soakResult, error) {
	st, err := store.Create(db, store.Options{})
	if err != nil {
		return nil, err
	}
	planJSON, err := bigPlan()
	if err != nil {
		return nil, err
	}
	res := &soakResult{Pruned: pruned, Days: days, FileMiB: map[int]float64{}, InUseMiB: map[int]float64{}}
	rng := rand.New(rand.NewPCG(1, 90))
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for day := range days {
		now := start.Add(time.Duration(day) * 24 * time.Hour)
		if err := soakDay(st, rng, day, now, planJSON); err != nil {
			return nil, err
		}
		if pruned {
			t0 := time.Now()
			if _, err := st.Prune(store.PruneOptions{Now: now, Retention: store.DefaultRetention,
				KeepGenerations: store.DefaultKeepGenerations, KeepPlans: rollout.PlansToKeep}); err != nil {
				return nil, err
			}
			res.PruneMillis = append(res.PruneMillis, float64(time.Since(t0).Milliseconds()))
		}
		if fi, err := os.Stat(db); err == nil {
			res.FileMiB[day+1] = float64(fi.Size()) / (1 << 20)
		}
		if res.InUseMiB[day+1], err = inUse(db); err != nil {
			return nil, err
		}
		if (day+1)%30 == 0 {
			benchutil.Logf("  day %d: file %.1f MiB, %.1f MiB in use", day+1, res.FileMiB[day+1], res.InUseMiB[day+1])
		}
	}
	res.Records, err = records(st)
	return res, err
}

// bigPlan is the JSON of the plan of a 100,000-flow baseline.
func bigPlan() ([]byte, error) {
	flows := make([]store.Flow, 0, 100_000)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 100_000 {
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: uint32(1000 + i%50), Proto: plan.ProtoTCP,
			IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: uint16(443 + i%7)},
			Hits: uint64(1 + i%100), FirstSeen: now, LastSeen: now, Hostnames: []string{fmt.Sprintf("host%d.example.com", i%5000)}})
	}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, Now: now,
		DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")}})
	return json.Marshal(p)
}

// soakDay is one day: 20,000 new denied destinations in 288 flushes (every
// 5 minutes), every minute with denials, a learning run, a generation.
func soakDay(st *store.Store, rng *rand.Rand, day int, now time.Time, planJSON []byte) error {
	minutes := map[int64]store.DenialCount{}
	for m := range int64(1440) {
		minutes[now.Unix()/60+m] = store.DenialCount{Drop: uint64(1 + rng.IntN(1000))}
	}
	var obs []store.Observation
	for i := range 20_000 {
		k := store.FlowKey{UID: uint32(rng.IntN(20)), Proto: plan.ProtoUDP,
			IP: netip.AddrFrom4([4]byte{100, byte(day), byte(i >> 8), byte(i)}), Port: uint16(1 + rng.IntN(65535))}
		at := now.Add(time.Duration(i) * 4 * time.Second)
		obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: k, Hits: uint64(1 + rng.IntN(3)), FirstSeen: at, LastSeen: at})
	}
	// One batch a day, as a monitor's flushes add up to.
	if _, err := st.RecordObservations(&store.ObservationBatch{Observations: obs, Minutes: minutes}); err != nil {
		return err
	}
	r, err := st.BeginRun(store.Run{Start: now, Cgroup: "/sys/fs/cgroup/unified"})
	if err != nil {
		return err
	}
	r.End, r.Finished, r.Events = now.Add(23*time.Hour), true, uint64(rng.IntN(1_000_000))
	if err := st.Apply(&store.Batch{Run: &r}); err != nil {
		return err
	}
	_, err = st.AddGeneration(store.Generation{Time: now, Target: "/run/netns/soak", Table: "egress", Mode: "enforce",
		State: store.GenApplied, Elements: 100_000, Command: "egress-enforce apply"}, planJSON)
	return err
}

// inUse is the size of the file's pages that hold data, in MiB.
func inUse(path string) (float64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var size int64
	_ = db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return float64(size-int64(db.Stats().FreePageN*db.Info().PageSize)) / (1 << 20), nil
}

func records(st *store.Store) (map[string]int, error) {
	out := map[string]int{}
	obs, err := st.Observations()
	if err != nil {
		return nil, err
	}
	runs, err := st.Runs()
	if err != nil {
		return nil, err
	}
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	sums, err := st.PlanSummaries()
	if err != nil {
		return nil, err
	}
	minutes, err := st.Denials(0, 1<<40)
	if err != nil {
		return nil, err
	}
	out["observations"], out["runs"], out["generations"] = len(obs), len(runs), len(gens)
	out["plans"], out["plan_summaries"], out["denial_minutes"] = len(gens)-len(sums), len(sums), len(minutes)
	return out, nil
}
