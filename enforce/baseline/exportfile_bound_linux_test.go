//go:build linux

package baseline

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadExportFileBounded: the memo's reader of an export (apply --from
// one export) refuses a file over the bound whichever way it reads it: a
// regular file it maps, and a pipe, which it reads (where os.ReadFile read
// whatever the writer gave, without end). Within the bound both read.
func TestReadExportFileBounded(t *testing.T) {
	lowerExportBounds(t, 1<<20, 4<<20)
	dir := t.TempDir()
	over := bytes.Repeat([]byte(" "), 1<<20+1)

	regular := filepath.Join(dir, "over.json")
	if err := os.WriteFile(regular, over, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, release, err := readExportFile(regular); err == nil || !strings.Contains(err.Error(), "over the bound of an export") {
		release()
		t.Fatalf("a regular file over the bound: %v, want it refused", err)
	}

	fifo := func(data []byte) string {
		path := filepath.Join(t.TempDir(), "export.json")
		if err := unix.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		go func() {
			w, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			defer w.Close()
			_, _ = w.Write(data) // EPIPE once the reader has had enough
			_, _ = w.Write(data)
		}()
		return path
	}
	if _, release, err := readExportFile(fifo(over)); err == nil || !strings.Contains(err.Error(), "over the bound of an export") {
		release()
		t.Fatalf("a pipe giving more than the bound: %v, want it refused", err)
	}

	within := []byte(`{"flows":[]}`)
	data, release, err := readExportFile(fifo(within))
	if err != nil || string(data) != string(within)+string(within) {
		t.Fatalf("a pipe within the bound: %q %v", data, err)
	}
	release()
	if err := os.WriteFile(regular, within, 0o600); err != nil {
		t.Fatal(err)
	}
	data, release, err = readExportFile(regular)
	if err != nil || string(data) != string(within) {
		t.Fatalf("a regular file within the bound: %q %v", data, err)
	}
	release()
}
