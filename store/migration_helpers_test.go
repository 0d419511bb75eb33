package store

import (
	"fmt"
	"path/filepath"
	"testing"
)

// allMigrations are the migrations this binary knows.
var allMigrations = migrations

// withSchema makes the store know only the first version schema
// versions until the test ends (or the next withSchema).
func withSchema(t *testing.T, version int) {
	t.Helper()
	migrations = allMigrations[:version]
	t.Cleanup(func() { migrations = allMigrations })
}

// oldFile creates a store file of schema version, lets fill (if any)
// write to it, and opens it for reading with all the migrations known:
// a reader of the new binary on a file no writer migrated yet.
func oldFile(t *testing.T, version int, fill func(*Store)) (path string, r *Store) {
	t.Helper()
	withSchema(t, version)
	path = filepath.Join(t.TempDir(), fmt.Sprintf("v%d.db", version))
	s, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		fill(s)
	}
	migrations = allMigrations
	if r, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	return path, r
}

// migrated opens path for writing, which migrates it, and checks that its
// schema is then want.
func migrated(t *testing.T, path string, want int) *Store {
	t.Helper()
	s, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(); err != nil || info.Schema != want {
		t.Errorf("schema after migration: %d, want %d (%v)", info.Schema, want, err)
	}
	return s
}
