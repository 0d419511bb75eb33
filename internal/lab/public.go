//go:build linux

package lab

import (
	"os"
	"path/filepath"
	"testing"
)

// PublicDir makes a temporary folder every user may enter (t.TempDir's
// and go test's are root's only), removed when the test ends.
func PublicDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// PublicCopy copies the program src as name into a PublicDir, where every
// user may run it (the test binary for a helper run as another user, or a
// renamed copy of a tool), and returns the copy's path.
func PublicCopy(t testing.TB, src, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(PublicDir(t, "egress-"+name), name)
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}
