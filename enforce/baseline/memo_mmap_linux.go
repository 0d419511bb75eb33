//go:build linux

package baseline

import (
	"os"

	"golang.org/x/sys/unix"
)

// readMemoFile maps the memo at path, read only, for the life of the
// process: the elements taken from it point into it. A memo is never
// written in place (WriteMemo renames a new one over it), so the mapping
// stays whole.
func readMemoFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 || !st.Mode().IsRegular() {
		return os.ReadFile(path)
	}
	return unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
}
