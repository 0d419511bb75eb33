//go:build linux

package baseline

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestReadExportFile: a regular file's bytes, an empty file, a file that
// is not a regular one, and a missing one.
func TestReadExportFile(t *testing.T) {
	dir := t.TempDir()
	want := bytes.Repeat([]byte(`{"flows":[]} `), 10000)
	path := filepath.Join(dir, "export.json")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	data, release, err := readExportFile(path)
	if err != nil || !bytes.Equal(data, want) {
		t.Fatalf("read %d bytes (err %v), want %d", len(data), err, len(want))
	}
	release()
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if data, release, err := readExportFile(empty); err != nil || len(data) != 0 {
		t.Fatalf("empty file: %d bytes, err %v", len(data), err)
	} else {
		release()
	}
	if data, release, err := readExportFile("/dev/null"); err != nil || len(data) != 0 {
		t.Fatalf("/dev/null: %d bytes, err %v", len(data), err)
	} else {
		release()
	}
	if _, _, err := readExportFile(filepath.Join(dir, "none")); !os.IsNotExist(err) {
		t.Fatalf("missing file: err %v", err)
	}
}
