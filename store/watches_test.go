package store

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// TestWatchRuns: a monitor's run is recorded with its first flush, in the
// same transaction as its observations; later flushes move its end, keep
// its start and add up what it left unrecorded; a second run is another
// record.
func TestWatchRuns(t *testing.T) {
	s := newStore(t)
	w := &Watch{Start: t0, End: t0.Add(time.Second), Target: "/run/netns/x", Group: 88, Counters: true}
	obs := Observation{Kind: ObsAudit, FlowKey: FlowKey{UID: 7, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443},
		Hits: 1, FirstSeen: t0, LastSeen: t0}
	if _, err := s.RecordObservations(&ObservationBatch{Observations: []Observation{obs}, Watch: w,
		Unrecorded: Unrecorded{Audit: 2, Records: 1}}); err != nil {
		t.Fatal(err)
	}
	if w.ID != 1 {
		t.Fatalf("the run's number: %d", w.ID)
	}
	later := *w
	later.Start, later.End, later.Unrecorded, later.LostLogs, later.Finished = t0.Add(time.Hour), t0.Add(time.Minute), Unrecorded{}, 3, true
	if _, err := s.RecordObservations(&ObservationBatch{Watch: &later, Unrecorded: Unrecorded{Audit: 1, Records: 1}}); err != nil {
		t.Fatal(err)
	}
	second := &Watch{Start: t0.Add(2 * time.Minute), End: t0.Add(2 * time.Minute), Group: 88}
	if _, err := s.RecordObservations(&ObservationBatch{Watch: second}); err != nil {
		t.Fatal(err)
	}
	ws, err := s.Watches()
	if err != nil || len(ws) != 2 {
		t.Fatalf("watches %+v, %v", ws, err)
	}
	got := ws[0]
	if !got.Start.Equal(t0) || !got.End.Equal(t0.Add(time.Minute)) || got.Unrecorded != (Unrecorded{Audit: 3, Records: 2}) ||
		got.LostLogs != 3 || !got.Finished || got.Target != "/run/netns/x" || !got.Counters {
		t.Errorf("first run %+v", got)
	}
	if ws[1].ID != 2 || second.ID != 2 {
		t.Errorf("second run %+v (%d)", ws[1], second.ID)
	}
}

// TestWatchRunsAreBounded: a watch restarting in a loop keeps at most
// maxWatches runs, the newest.
func TestWatchRunsAreBounded(t *testing.T) {
	s := newStore(t)
	saved, savedGap := maxWatches, writeGap
	maxWatches, writeGap = 5, 0
	t.Cleanup(func() { maxWatches, writeGap = saved, savedGap })
	for i := range 12 {
		at := t0.Add(time.Duration(i) * time.Minute)
		if _, err := s.RecordObservations(&ObservationBatch{Watch: &Watch{Start: at, End: at}}); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := s.Watches()
	if err != nil || len(ws) != 5 || ws[0].ID != 8 || ws[4].ID != 12 {
		t.Fatalf("watches %+v, %v", ws, err)
	}
}

// TestPruneWatchRuns: runs that ended before the retention go.
func TestPruneWatchRuns(t *testing.T) {
	s := newStore(t)
	for _, at := range []time.Time{t0.Add(-100 * 24 * time.Hour), t0.Add(-time.Hour)} {
		if _, err := s.RecordObservations(&ObservationBatch{Watch: &Watch{Start: at, End: at.Add(time.Minute)}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Prune(PruneOptions{Now: t0, Retention: 90 * 24 * time.Hour})
	if err != nil || res.Watches != 1 {
		t.Fatalf("prune %+v, %v", res, err)
	}
	if ws, _ := s.Watches(); len(ws) != 1 || !ws[0].Start.Equal(t0.Add(-time.Hour)) {
		t.Errorf("left %+v", ws)
	}
}

// TestMigrationAddsWatches: a file of schema 3 has no runs to read before
// a writer migrates it, and records them after.
func TestMigrationAddsWatches(t *testing.T) {
	path, r := oldFile(t, 3, nil)
	if ws, err := r.Watches(); err != nil || len(ws) != 0 {
		t.Errorf("runs of a v3 file: %v, %v", ws, err)
	}
	if _, err := r.RecordObservations(&ObservationBatch{Watch: &Watch{Start: t0, End: t0}}); err == nil {
		t.Error("a file not migrated took a run")
	}
	s := migrated(t, path, SchemaVersion)
	if _, err := s.RecordObservations(&ObservationBatch{Watch: &Watch{Start: t0, End: t0}}); err != nil {
		t.Fatal(err)
	}
}

// TestEvictionCountsInTheRun: an observation the bound evicts is counted
// as unrecorded in the monitor's run that evicted it, which covers the
// time a later look at the record needs: a user whose audited packet was
// pushed out by a flood of heavier ones is not taken as quiet.
func TestEvictionCountsInTheRun(t *testing.T) {
	s, err := Create(filepath.Join(t.TempDir(), "s.db"), Options{MaxObservations: 2})
	if err != nil {
		t.Fatal(err)
	}
	ob := func(uid uint32, ip string, hits uint64) Observation {
		return Observation{Kind: ObsAudit, FlowKey: FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: 443}, Hits: hits, FirstSeen: t0, LastSeen: t0}
	}
	w := &Watch{Start: t0, End: t0}
	if _, err := s.RecordObservations(&ObservationBatch{Watch: w, Observations: []Observation{ob(1, "192.0.2.1", 1), ob(2, "192.0.2.2", 5)}}); err != nil {
		t.Fatal(err)
	}
	w.End = t0.Add(time.Second)
	if _, err := s.RecordObservations(&ObservationBatch{Watch: w, Observations: []Observation{ob(2, "192.0.2.3", 9)}}); err != nil {
		t.Fatal(err)
	}
	ws, err := s.Watches()
	if err != nil || len(ws) != 1 || ws[0].Unrecorded != (Unrecorded{Audit: 1, Records: 1}) {
		t.Fatalf("runs %+v, %v", ws, err)
	}
}
