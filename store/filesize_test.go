package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSmallStoreIsASmallFile: a store opened for writing is mapped 1 GiB
// up front; its file still grows with what it holds, not in 16 MiB steps.
func TestSmallStoreIsASmallFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := st.BeginRun(Run{Start: now, End: now, Cgroup: "/x"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 2<<20 {
		t.Errorf("a store holding one run is a %d-byte file", fi.Size())
	}
}
