//go:build linux

package rollout

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// TestReadIndexFile: the index read from its file's mapping is the one
// written; a file cut short, or not an index, is an error (the apply then
// replaces the table), not a crash.
func TestReadIndexFile(t *testing.T) {
	x := plan.IndexOf(planOf(plan.ModeEnforce, 443, 8443, 1000))
	dir := t.TempDir()
	for n, patched := range map[uint64]bool{7: false, 8: true} { // written as encoded, and encoded whole
		if err := writeIndex(dir, n, x, patched); err != nil {
			t.Fatal(err)
		}
		got, err := readIndexFile(indexFile(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Encode(), x.Encode()) {
			t.Fatalf("patched %v: the index read back is not the one written", patched)
		}
	}
	for name, data := range map[string][]byte{"short": x.Encode()[:len(x.Encode())-5], "empty": nil, "other": []byte("not an index")} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if x, err := readIndexFile(path); err == nil || x != nil {
			t.Errorf("%s: read as an index (%v)", name, err)
		}
	}
	if _, err := readIndexFile(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v, want not-exist", err)
	}
}
