//go:build unix

package store

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/internal/mapfile"
)

// unlockFile releases bbolt's flock on f at once: a memory map of the file
// would otherwise keep it until the process exits.
func unlockFile(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

// mapReadOnly maps the first size bytes of f read only (nil when it
// cannot: the caller reads f instead); unmap unmaps them.
func mapReadOnly(f *os.File, size int64) (data []byte, unmap func()) {
	return mapfile.Map(f, size)
}

// dropMapped drops the pages of a read-only map of a file from the
// process (its resident memory), not from the file: a later read of them
// faults them back in from the page cache.
func dropMapped(b []byte) { _ = unix.Madvise(b, unix.MADV_DONTNEED) }
