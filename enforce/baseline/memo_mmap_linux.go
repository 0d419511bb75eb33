//go:build linux

package baseline

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/internal/mapfile"
)

// readMemoFile maps the memo at path, read only, for the life of the
// process: the elements taken from it point into it. A memo is never
// written in place (WriteMemo renames a new one over it), and its mapping
// is leased where the kernel allows (mapfile.ReadOnly): another process's
// write or truncate of the file waits for the process to end (or for the
// kernel's lease-break-time) instead of cutting the mapping short.
func readMemoFile(path string) ([]byte, error) {
	data, _, err := mapfile.ReadOnly(path)
	return data, err
}

// readExportFile gives the bytes of the file at path, outside the Go
// heap, and the function that releases them (once nothing uses them).
// The file is mapped under a read lease where the kernel allows
// (mapfile.Lease: nothing writes or cuts it while it is read; its pages
// come from the page cache, 16 a fault, where a copy faults in each page
// of fresh memory: ~10k faults less at 100k flows). Else it is read into
// memory mapped outside the heap: the heap's growth, so the peak memory
// of an apply, follows what is live in the heap, and 22 MB of a 100k-flow
// export live there while it is read counted four times over
// (cli.FewerGCs). A file that is not a regular one, empty, of 2 GiB or
// more, or that grows while it is read is read with readExportFrom. A
// file over maxExportBytes is refused, whichever way it is read.
func readExportFile(path string) ([]byte, func(), error) {
	none := func() {}
	f, err := os.Open(path)
	if err != nil {
		return nil, none, err
	}
	if data, release := mapfile.Lease(f); data != nil {
		if n := int64(len(data)); n > maxExportBytes {
			release() // closes f
			return nil, none, fmt.Errorf("%s: %w", path, exportTooLarge(n))
		}
		return data, release, nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, none, err
	}
	size := st.Size()
	if !st.Mode().IsRegular() || size == 0 || size > maxExportBytes {
		data, err := readExportFrom(f, path) // a pipe is read once, never opened again
		return data, none, err
	}
	// One byte more than the size: a file that grew is seen.
	buf, err := unix.Mmap(-1, 0, int(size)+1, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		data, err := readExportFrom(f, path)
		return data, none, err
	}
	release := func() { _ = unix.Munmap(buf) }
	n, err := io.ReadFull(f, buf)
	switch {
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		return buf[:n], release, nil
	case err != nil:
		release()
		return nil, none, err
	}
	release() // it grew
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, none, err
	}
	data, err := readExportFrom(f, path)
	return data, none, err
}
