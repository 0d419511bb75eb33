package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func obsAt(i int, hits uint64, at time.Time) Observation {
	k := FlowKey{UID: uint32(i % 3), Proto: 17, IP: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), Port: uint16(i)}
	return Observation{Kind: ObsDrop, FlowKey: k, Hits: hits, FirstSeen: at, LastSeen: at}
}

func storedHits(t *testing.T, s *Store) (n int, hits uint64) {
	t.Helper()
	obs, err := s.Observations()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		hits += o.Hits
	}
	return len(obs), hits
}

// TestObservationsAreBounded: past MaxObservations, new destinations are
// left out or take the place of lighter ones; nothing exceeds the bound,
// and every packet is either in an observation or counted as unrecorded.
func TestObservationsAreBounded(t *testing.T) {
	s, err := Create(filepath.Join(t.TempDir(), "b.db"), Options{MaxObservations: 100})
	if err != nil {
		t.Fatal(err)
	}
	var batch []Observation
	for i := range 150 {
		batch = append(batch, obsAt(i, 1, t0))
	}
	left, err := s.RecordObservations(&ObservationBatch{Observations: batch, Unrecorded: Unrecorded{Drop: 7, Records: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if n, hits := storedHits(t, s); n != 100 || hits != 100 || left.Drop != 50 || left.Records != 50 {
		t.Fatalf("stored %d (%d hits), left out %+v; want 100 stored, 50 left out", n, hits, left)
	}
	// Ten heavier newcomers evict ten of the lightest; a known
	// destination still adds up when the bucket is full.
	batch = []Observation{obsAt(0, 4, t0.Add(time.Minute))}
	for i := range 10 {
		batch = append(batch, obsAt(1000+i, 5, t0.Add(time.Minute)))
	}
	if left, err = s.RecordObservations(&ObservationBatch{Observations: batch}); err != nil {
		t.Fatal(err)
	}
	n, hits := storedHits(t, s)
	if n != 100 || left.Records != 10 || left.Drop != 10 {
		t.Errorf("after heavier newcomers: %d stored, left %+v", n, left)
	}
	u, err := s.Unrecorded()
	if err != nil {
		t.Fatal(err)
	}
	if total := uint64(150 + 4 + 50 + 7); hits+u.Drop != total || u.Records != 3+50+10 {
		t.Errorf("stored %d + unrecorded %d packets, want %d in all; records %d", hits, u.Drop, total, u.Records)
	}
	obs, _ := s.Observations()
	for _, o := range obs {
		if o.FlowKey == obsAt(0, 0, t0).FlowKey && o.Hits != 5 {
			t.Errorf("the known destination has %d hits, want 5", o.Hits)
		}
	}
}

// TestPruneRetention: observations not seen, minutes and runs older than
// the retention go; the rest stays.
func TestPruneRetention(t *testing.T) {
	s := newStore(t)
	now := t0.Add(200 * 24 * time.Hour)
	old, recent := now.Add(-91*24*time.Hour), now.Add(-89*24*time.Hour)
	err := s.AddObservations([]Observation{obsAt(1, 1, old), obsAt(2, 1, recent), {Kind: ObsAudit, FlowKey: obsAt(3, 0, old).FlowKey,
		Hits: 2, FirstSeen: old, LastSeen: recent}},
		map[int64]DenialCount{old.Unix() / 60: {Drop: 1}, recent.Unix() / 60: {Drop: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Run{{Start: old, End: old, Finished: true}, {Start: old, End: recent}, {Start: recent, End: recent}} {
		r, err := s.BeginRun(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(&Batch{Run: &r}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Prune(PruneOptions{Now: now, Retention: 90 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res != (PruneResult{Observations: 1, Denials: 1, Runs: 1}) {
		t.Errorf("pruned %+v", res)
	}
	obs, _ := s.Observations()
	runs, _ := s.Runs()
	minutes, _ := s.Denials(0, now.Unix()/60)
	if len(obs) != 2 || len(runs) != 2 || len(minutes) != 1 || minutes[recent.Unix()/60].Drop != 1 {
		t.Errorf("left %d observations, %d runs, minutes %v", len(obs), len(runs), minutes)
	}
	if res, _ := s.Prune(PruneOptions{Now: now, Retention: 90 * 24 * time.Hour}); res != (PruneResult{}) {
		t.Errorf("a second prune deleted %+v", res)
	}
}

// TestPrunePlansKeepsNewestAndNamed: the newest generations and the ones
// KeepPlans names keep their plans; the others have a summary, and
// reading their plan says it was pruned.
func TestPrunePlansKeepsNewestAndNamed(t *testing.T) {
	s := newStore(t)
	plans := map[uint64][]byte{}
	for i := range 10 {
		p := []byte(fmt.Sprintf(`{"plan":%d,"rules":%q}`, i+1, strings.Repeat("x", i*100)))
		g, err := s.AddGeneration(Generation{Table: "egress", Mode: "enforce", State: GenApplied}, p)
		if err != nil {
			t.Fatal(err)
		}
		plans[g.N] = p
	}
	var seen int
	keep := func(gens []Generation) []uint64 { seen = len(gens); return []uint64{2} }
	res, err := s.Prune(PruneOptions{Now: t0, KeepGenerations: 3, KeepPlans: keep})
	if err != nil {
		t.Fatal(err)
	}
	if res.Plans != 6 || seen != 10 {
		t.Errorf("pruned %d plans (KeepPlans saw %d generations), want 6", res.Plans, seen)
	}
	sums, err := s.PlanSummaries()
	if err != nil || len(sums) != 6 {
		t.Fatalf("summaries %v, %v", sums, err)
	}
	for n, p := range plans {
		got, err := s.GenerationPlan(n)
		switch n {
		case 2, 8, 9, 10:
			if err != nil || string(got) != string(p) {
				t.Errorf("kept plan %d: %q, %v", n, got, err)
			}
		default:
			h := sha256.Sum256(p)
			if !errors.Is(err, ErrPlanPruned) || !strings.Contains(err.Error(), hex.EncodeToString(h[:])) {
				t.Errorf("pruned plan %d: %v, want ErrPlanPruned with its hash", n, err)
			}
			if sums[n].Bytes != len(p) {
				t.Errorf("summary of %d: %+v", n, sums[n])
			}
		}
	}
	gens, _ := s.Generations()
	if len(gens) != 10 {
		t.Errorf("%d generation records after prune, want all 10", len(gens))
	}
}

// TestMigrationToVersion3: a version 2 file with generations, plans and
// observations becomes version 3 with the summaries' bucket and all its
// data; a reader of the new binary reads the old file unmigrated.
func TestMigrationToVersion3(t *testing.T) {
	path, r := oldFile(t, 2, func(s *Store) {
		for i := range 3 {
			if _, err := s.AddGeneration(Generation{Table: "egress", Mode: "audit", State: GenApplied}, []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AddObservations([]Observation{obsAt(1, 3, t0)}, map[int64]DenialCount{1: {Drop: 3}}); err != nil {
			t.Fatal(err)
		}
	})
	if p, err := r.GenerationPlan(1); err != nil || string(p) != "0" {
		t.Errorf("plan from the v2 file: %q, %v", p, err)
	}
	if _, err := r.Prune(PruneOptions{Now: t0, KeepGenerations: 1}); err == nil || !strings.Contains(err.Error(), "older schema") {
		t.Errorf("prune of an unmigrated file: %v", err)
	}
	s := migrated(t, path, SchemaVersion)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketPlanSummaries) == nil {
			t.Error("no plan_summaries bucket")
		}
		return nil
	})
	db.Close()
	if n, hits := storedHits(t, s); n != 1 || hits != 3 {
		t.Errorf("observations after migration: %d, %d hits", n, hits)
	}
	if res, err := s.Prune(PruneOptions{Now: t0, KeepGenerations: 1}); err != nil || res.Plans != 2 {
		t.Errorf("prune after migration: %+v, %v", res, err)
	}
}

// TestStoreSizeStaysFlatOverSoak: 180 simulated days of a monitor and an
// enforcer (new denied destinations, every minute denied, a learning run
// and a generation with its plan each day), pruned daily with the default
// retention and keep_generations. Once the retention is reached, the file
// stops growing; without pruning it keeps growing.
func TestStoreSizeStaysFlatOverSoak(t *testing.T) {
	saved := writeGap
	writeGap = 0
	t.Cleanup(func() { writeGap = saved })
	soak := func(prune bool) map[int]int64 {
		s := newStore(t)
		rng := rand.New(rand.NewPCG(7, 7))
		used := map[int]int64{}
		for day := range 180 {
			now := t0.Add(time.Duration(day) * 24 * time.Hour)
			soakDay(t, s, rng, day, now)
			if prune {
				_, err := s.Prune(PruneOptions{Now: now, Retention: DefaultRetention, KeepGenerations: DefaultKeepGenerations})
				if err != nil {
					t.Fatal(err)
				}
			}
			used[day+1] = pagesInUse(t, s.Path())
		}
		return used
	}
	pruned, kept := soak(true), soak(false)
	t.Logf("store pages in use, pruned daily: day 30 %d KiB, day 90 %d KiB, day 100 %d KiB, day 180 %d KiB; never pruned: day 180 %d KiB",
		pruned[30]>>10, pruned[90]>>10, pruned[100]>>10, pruned[180]>>10, kept[180]>>10)
	if pruned[180] > pruned[100]+pruned[100]/20 {
		t.Errorf("the pruned store grew from %d bytes on day 100 to %d on day 180", pruned[100], pruned[180])
	}
	if kept[180] < pruned[180]*3/2 {
		t.Errorf("the soak does not load the store: never pruned %d bytes, pruned %d", kept[180], pruned[180])
	}
}

// pagesInUse is the size of the file's pages that hold data: its high
// water mark less its free pages. (The file itself grows in steps of
// bbolt's allocation size, so it says less.)
func pagesInUse(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	_ = db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return size - int64(db.Stats().FreePageN*db.Info().PageSize)
}

// soakDay writes one day: 100 new denied destinations, one count per
// minute, a learning run and a generation with a 20 KB plan.
func soakDay(t *testing.T, s *Store, rng *rand.Rand, day int, now time.Time) {
	t.Helper()
	var obs []Observation
	for i := range 100 {
		o := obsAt(day*100+i, uint64(1+rng.IntN(5)), now)
		o.IP = netip.AddrFrom4([4]byte{10, byte(day), byte(i >> 8), byte(i)})
		obs = append(obs, o)
	}
	minutes := map[int64]DenialCount{}
	for m := range int64(1440) {
		minutes[now.Unix()/60+m] = DenialCount{Drop: uint64(1 + rng.IntN(100))}
	}
	if err := s.AddObservations(obs, minutes); err != nil {
		t.Fatal(err)
	}
	r, err := s.BeginRun(Run{Start: now})
	if err != nil {
		t.Fatal(err)
	}
	r.End, r.Finished = now.Add(time.Hour), true
	if err := s.Apply(&Batch{Run: &r}); err != nil {
		t.Fatal(err)
	}
	plan := make([]byte, 0, 20<<10)
	for len(plan) < 20<<10 {
		plan = fmt.Appendf(plan, "%d . 10.%d.%d.%d . tcp . 443,", rng.IntN(2000), rng.IntN(256), rng.IntN(256), rng.IntN(256))
	}
	if _, err := s.AddGeneration(Generation{Time: now, Table: "egress", Mode: "enforce", State: GenApplied}, plan); err != nil {
		t.Fatal(err)
	}
}
