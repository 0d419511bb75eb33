//go:build linux

package lab

import (
	"testing"

	"golang.org/x/sys/unix"
)

// NewBPFFS mounts a bpf file system of its own on a temporary directory
// (pins there stay out of the host's /sys/fs/bpf); t.Cleanup unmounts it,
// which frees what is pinned there.
func NewBPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount a bpf file system on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}
