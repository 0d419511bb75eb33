//go:build linux

package mapfile

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLeased: a file on a local file system is mapped under a lease,
// given back at release; a file open for writing, one on a file system
// Leased does not lease on, and a missing one are not mapped (the caller
// reads them).
func TestLeased(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(leaseFS, int64(fs.Type)) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is on a file system of type %#x, not one Leased maps; CI=true, so this is a failure, not a skip", dir, fs.Type)
		}
		t.Skipf("%s is on a file system of type %#x, not one Leased maps", dir, fs.Type)
	}
	path := filepath.Join(dir, "f")
	want := bytes.Repeat([]byte("lease "), 1000)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	data, release := Leased(path)
	if !bytes.Equal(data, want) {
		t.Fatalf("leased %d bytes, want %d", len(data), len(want))
	}
	if !leased(t, path) {
		t.Fatal("/proc/locks shows no lease on the mapped file")
	}
	release()
	if leased(t, path) {
		t.Fatal("the lease is held after release")
	}

	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := Leased(path); data != nil {
		t.Fatal("a file open for writing was mapped")
	}
	w.Close()
	if data, _ := Leased("/proc/self/status"); data != nil {
		t.Fatal("a file of /proc was mapped")
	}
	if data, _ := Leased(filepath.Join(dir, "none")); data != nil {
		t.Fatal("a missing file was mapped")
	}
}

// leased says whether /proc/locks shows a lease on path.
func leased(t *testing.T, path string) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	ino := ":" + strconv.FormatUint(st.Ino, 10) + " "
	for _, line := range bytes.Split(locks, []byte("\n")) {
		if bytes.Contains(line, []byte("LEASE")) && bytes.Contains(line, []byte(ino)) {
			return true
		}
	}
	return false
}
