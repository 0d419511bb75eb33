package store

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// filePageSize is the page size the file at path was made with.
func filePageSize(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return db.Info().PageSize
}

// approveInto writes the approvals of keys into generation 1 of s, as an
// apply --from into a new store does.
func approveInto(t *testing.T, s *Store, keys []FlowKey) {
	t.Helper()
	g, err := s.AddGeneration(Generation{State: GenApplying}, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := NewApprovals(keys, func(f *Flow) { f.Approved, f.ApprovedAt = g.N, at })
	if _, err := s.UpdateGenerationPlanApproving(g.N, []byte("plan"), func(g *Generation) error { g.State = GenApplied; return nil }, a); err != nil {
		t.Fatal(err)
	}
}

// TestPageSizeOfNewFile: Options.PageSize is the page size of a file
// Create makes; the file reads back whole (every page checked by a fresh
// Store) and takes more writes.
func TestPageSizeOfNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Create(path, Options{PageSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	keys := benchKeys(20_000)
	approveInto(t, s, keys)
	if got := filePageSize(t, path); got != 16<<10 {
		t.Fatalf("page size of the new file %d, want %d", got, 16<<10)
	}
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	flows, err := r.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != len(keys) {
		t.Fatalf("%d flows read back, want %d", len(flows), len(keys))
	}
	for i := range flows {
		if flows[i].Approved != 1 {
			t.Fatalf("flow %v not approved by generation 1: %+v", flows[i].FlowKey, flows[i])
		}
	}
	// A second writer of the same file (with another page size asked
	// for) adds to it.
	w, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	more := benchKeys(40_000)[20_000:]
	for i := range more {
		more[i].Port = 80
	}
	approveInto(t, w, more)
	if flows, err = r.Flows(); err != nil || len(flows) != len(keys)+len(more) {
		t.Fatalf("after a second write: %d flows, %v; want %d", len(flows), err, len(keys)+len(more))
	}
	if got := filePageSize(t, path); got != 16<<10 {
		t.Fatalf("page size after a second write %d, want %d", got, 16<<10)
	}
}

// TestPageSizeKeptByExistingFile: a file that exists keeps its page size
// whatever Options.PageSize says.
func TestPageSizeKeptByExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	if _, err := Create(path, Options{}); err != nil {
		t.Fatal(err)
	}
	before := filePageSize(t, path)
	s, err := Create(path, Options{PageSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	approveInto(t, s, benchKeys(5_000))
	if got := filePageSize(t, path); got != before || got == 64<<10 {
		t.Fatalf("page size of an existing file %d after a write asking for %d, want %d", got, 64<<10, before)
	}
}

// TestPageSizeRefused: a page size that is not a power of two from 4 KiB
// to 64 KiB is refused before any file is made.
func TestPageSizeRefused(t *testing.T) {
	for _, ps := range []int{512, 5000, 1 << 20, -4096} {
		path := filepath.Join(t.TempDir(), "s.db")
		if _, err := Create(path, Options{PageSize: ps}); err == nil {
			t.Errorf("Create with page size %d: no error", ps)
		}
		if _, err := Open(path, Options{}); err == nil {
			t.Errorf("page size %d: a file was made", ps)
		}
	}
}
