//go:build unix

package store

import (
	"os"
	"syscall"
)

// unlockFile releases bbolt's flock on f at once: a memory map of the file
// would otherwise keep it until the process exits.
func unlockFile(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

// mapReadOnly maps the first size bytes of f read only (nil when it
// cannot: the caller reads f instead); unmap unmaps them.
func mapReadOnly(f *os.File, size int64) (data []byte, unmap func()) {
	if size <= 0 || size >= 1<<31 {
		return nil, func() {}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, func() {}
	}
	return data, func() { _ = syscall.Munmap(data) }
}

// dropMapped drops the pages of a read-only map of a file from the
// process (its resident memory), not from the file: a later read of them
// faults them back in from the page cache.
func dropMapped(b []byte) { _ = syscall.Madvise(b, syscall.MADV_DONTNEED) }
