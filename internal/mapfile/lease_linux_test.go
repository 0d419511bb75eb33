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

// TestLeased: a file on a local file system is mapped under a lease
// (ReadOnly), given back at release; a file open for writing and one on a
// file system Lease does not lease on are not leased (the caller reads
// them, from the same open file), and a missing one is an error.
func TestLeased(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(leaseFS, int64(fs.Type)) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is on a file system of type %#x, not one Lease maps; CI=true, so this is a failure, not a skip", dir, fs.Type)
		}
		t.Skipf("%s is on a file system of type %#x, not one Lease maps", dir, fs.Type)
	}
	path := filepath.Join(dir, "f")
	want := bytes.Repeat([]byte("lease "), 1000)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	data, release, err := ReadOnly(path)
	if err != nil || !bytes.Equal(data, want) {
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
	notLeased(t, path, "a file open for writing")
	w.Close()
	notLeased(t, "/proc/self/status", "a file of /proc")
	if data, _, err := ReadOnly(filepath.Join(dir, "none")); data != nil || !os.IsNotExist(err) {
		t.Fatalf("a missing file: %d bytes, err %v", len(data), err)
	}
}

// notLeased checks that Lease does not map the file at path, and leaves
// the file open for its caller to read.
func notLeased(t *testing.T, path, what string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if data, _ := Lease(f); data != nil {
		t.Fatalf("%s was mapped", what)
	}
	if _, err := f.Read(make([]byte, 1)); err != nil {
		t.Fatalf("%s: not readable after Lease refused it: %v", what, err)
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
