package store

import (
	"path/filepath"
	"testing"
	"time"
)

// TestQuestionsRecorded: questions add up by user and name, with their
// answer codes (NXDOMAIN kept); past the bound new names are counted.
func TestQuestionsRecorded(t *testing.T) {
	saved := maxQuestions
	maxQuestions = 2
	t.Cleanup(func() { maxQuestions = saved })
	s, err := Create(filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := &Batch{Questions: []QuestionObservation{
		{UID: 1000, Name: "www.example.com", QType: 1, Rcode: 0, Seen: t0},
		{UID: 1000, Name: "www.example.com", QType: 28, Rcode: 0, Seen: t0.Add(time.Minute)},
		{UID: 1000, Name: "www.example.com.corp.lan", QType: 1, Rcode: 3, Seen: t0},
		{UID: 1001, Name: "www.example.com", QType: 1, Rcode: 0, Seen: t0}, // over the bound
	}}
	if err := s.Apply(b); err != nil {
		t.Fatal(err)
	}
	qs, unrec, err := s.Questions()
	if err != nil || len(qs) != 2 || unrec != 1 {
		t.Fatalf("questions %+v, unrecorded %d, %v", qs, unrec, err)
	}
	if q := qs[0]; q.UID != 1000 || q.Name != "www.example.com" || q.Hits != 2 || len(q.QTypes) != 2 || !q.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Errorf("first: %+v", q)
	}
	if q := qs[1]; q.Rcodes["3"] != 1 {
		t.Errorf("the NXDOMAIN try: %+v", q)
	}
}

func TestDNSDenialsRecorded(t *testing.T) {
	saved := maxDNSDenialNames
	maxDNSDenialNames = 1
	t.Cleanup(func() { maxDNSDenialNames = saved })
	s, err := Create(filepath.Join(t.TempDir(), "d.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := DNSDenial{UID: 1000, Name: "x.t.evil", Hits: 3, Dropped: 3, FirstSeen: t0, LastSeen: t0}
	if err := s.RecordDNSDenials([]DNSDenial{d, d, {UID: 1000, Name: "y.t.evil", Hits: 5, FirstSeen: t0, LastSeen: t0}}); err != nil {
		t.Fatal(err)
	}
	ds, unrec, err := s.DNSDenials(time.Time{})
	if err != nil || len(ds) != 1 || ds[0].Hits != 6 || unrec != 5 {
		t.Fatalf("denials %+v, unrecorded %d, %v", ds, unrec, err)
	}
	if ds, _, _ := s.DNSDenials(t0.Add(time.Second)); len(ds) != 0 {
		t.Errorf("since: %+v", ds)
	}
	// Pruned with the retention: the room is free again.
	res, err := s.Prune(PruneOptions{Now: t0.Add(48 * time.Hour), Retention: 24 * time.Hour})
	if err != nil || res.DNSDenials != 1 {
		t.Fatalf("prune: %+v %v", res, err)
	}
	if err := s.RecordDNSDenials([]DNSDenial{{UID: 1000, Name: "y.t.evil", Hits: 1, FirstSeen: t0, LastSeen: t0}}); err != nil {
		t.Fatal(err)
	}
	if ds, unrec, _ := s.DNSDenials(time.Time{}); len(ds) != 1 || ds[0].Name != "y.t.evil" || unrec != 5 {
		t.Errorf("after the prune: %+v %d", ds, unrec)
	}
}

// TestMigrationAddsQuestions: a file of schema 4 has no questions; a
// writer migrates it (to 5 and on) and records them.
func TestMigrationAddsQuestions(t *testing.T) {
	path, r := oldFile(t, 4, nil)
	if qs, _, err := r.Questions(); err != nil || len(qs) != 0 {
		t.Errorf("questions of a v4 file: %v, %v", qs, err)
	}
	if err := r.RecordDNSDenials([]DNSDenial{{UID: 1, Name: "a"}}); err == nil {
		t.Error("a file not migrated took a denial")
	}
	s := migrated(t, path, SchemaVersion)
	if err := s.Apply(&Batch{Questions: []QuestionObservation{{UID: 1, Name: "a.b", Seen: t0}}}); err != nil {
		t.Fatal(err)
	}
	if qs, _, _ := s.Questions(); len(qs) != 1 {
		t.Errorf("questions after migration: %+v", qs)
	}
}
