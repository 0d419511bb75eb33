package store

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

func refusal(name string, dropped uint64, at time.Time) Refusal {
	return Refusal{FlowKey: FlowKey{UID: 7, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443}, Name: name,
		Kind: "tls", Verdict: "mismatch", Dropped: dropped, FirstSeen: at, LastSeen: at}
}

// TestMigrationAddsRefusals: a file of schema 6 has no refusals to read
// before a writer migrates it, and records them after.
func TestMigrationAddsRefusals(t *testing.T) {
	path, r := oldFile(t, 6, nil)
	if rs, _, err := r.Refusals(); err != nil || len(rs) != 0 {
		t.Errorf("refusals of a v6 file: %v, %v", rs, err)
	}
	if err := r.RecordRefusals([]Refusal{refusal("b.lab", 1, t0)}, 0); err == nil {
		t.Error("a file not migrated took a refusal")
	}
	s := migrated(t, path, SchemaVersion)
	for range 2 {
		if err := s.RecordRefusals([]Refusal{refusal("b.lab", 1, t0)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	rs, lost, err := s.Refusals()
	if err != nil || len(rs) != 1 || rs[0].Dropped != 2 || rs[0].Name != "b.lab" || rs[0].Port != 443 || lost != 0 {
		t.Fatalf("refusals %+v, lost %d, %v", rs, lost, err)
	}
}

// TestRefusalsBounded: past the bound, new names are counted, not kept;
// known ones still add up; retention prunes them.
func TestRefusalsBounded(t *testing.T) {
	maxRefusals = 3
	t.Cleanup(func() { maxRefusals = MaxRefusals })
	s, err := Create(filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var rs []Refusal
	for i := range 10 {
		rs = append(rs, refusal(fmt.Sprintf("n%d.lab", i), 1, t0))
	}
	rs = append(rs, refusal("n0.lab", 5, t0))
	if err := s.RecordRefusals(rs, 2); err != nil {
		t.Fatal(err)
	}
	got, lost, err := s.Refusals()
	if err != nil || len(got) != 3 || lost != 9 {
		t.Fatalf("%d refusals, %d lost, %v", len(got), lost, err)
	}
	res, err := s.Prune(PruneOptions{Retention: time.Hour, Now: t0.Add(2 * time.Hour)})
	if err != nil || res.Refusals != 3 {
		t.Fatalf("prune %+v, %v", res, err)
	}
}
