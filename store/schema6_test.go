package store

import (
	"strings"
	"testing"
)

// TestMigrationToVersion6: a version 5 file opened for writing becomes
// version 6 with its generations and plans as they were; a binary that
// knows only version 5 then refuses the file (it would read a plan stored
// as a patch as an empty plan).
func TestMigrationToVersion6(t *testing.T) {
	path, _ := oldFile(t, 5, func(s *Store) {
		if _, err := s.AddGeneration(Generation{Table: "egress", Mode: "audit", State: GenApplied}, []byte(`{"table":"egress"}`)); err != nil {
			t.Fatal(err)
		}
	})
	withSchema(t, 6) // version 6, not the newer ones
	r := migrated(t, path, 6)
	gens, err := r.Generations()
	if err != nil || len(gens) != 1 || gens[0].PlanBase != 0 {
		t.Errorf("generations after the migration: %+v, %v", gens, err)
	}
	if p, err := r.GenerationPlan(1); err != nil || string(p) != `{"table":"egress"}` {
		t.Errorf("plan after the migration: %q, %v", p, err)
	}
	withSchema(t, 5)
	if _, err := Create(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Errorf("a version 5 binary opens the migrated file: %v", err)
	}
}
