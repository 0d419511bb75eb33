//go:build unix

// Package mapfile reads a file through a read-only mapping of it, so its
// bytes are not copied into the Go heap.
package mapfile

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ReadOnly maps the file at path read only and gives its bytes and the
// function that unmaps them (once nothing uses them): under a read lease
// where the kernel gives one (Lease: no other process writes or cuts the
// file meanwhile), else plainly. A file that is not a regular one, is
// empty or of 2 GiB or more, or that the kernel does not map, is read
// into memory instead (the function then does nothing). A file mapped
// without a lease and cut short while it is read faults: a reader that
// must survive that recovers from it (debug.SetPanicOnFault).
func ReadOnly(path string) ([]byte, func(), error) {
	none := func() {}
	f, err := os.Open(path)
	if err != nil {
		return nil, none, err
	}
	if data, release := Lease(f); data != nil {
		return data, release, nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, none, err
	}
	if st.Mode().IsRegular() {
		if data, unmap := Map(f, st.Size()); data != nil {
			return data, unmap, nil
		}
	}
	data, err := io.ReadAll(f)
	return data, none, err
}

// Map maps the first size bytes of the open file f read only and gives
// the function that unmaps them; nil (and a function that does nothing)
// when size is not from 1 byte to under 2 GiB or the kernel does not map
// the file: the caller reads it instead.
func Map(f *os.File, size int64) ([]byte, func()) {
	if size <= 0 || size >= 1<<31 {
		return nil, func() {}
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, func() {}
	}
	return data, func() { _ = unix.Munmap(data) }
}
