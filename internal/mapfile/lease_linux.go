//go:build linux

package mapfile

import (
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Lease maps the open file f read only under a read lease
// (fcntl F_SETLEASE): while it is held, no other process can open the
// file for writing or truncate it; such an open or truncate waits until
// release, or until the kernel breaks the lease after
// /proc/sys/fs/lease-break-time (45 s by default); an open that does not
// wait (O_NONBLOCK) fails with EAGAIN. So the mapping is not cut short
// while it is read: a plain mapping of a file another process truncates
// faults (SIGBUS), a crash. The pages come from the page cache, several
// mapped a fault, where reading the file copies it into fresh memory, one
// fault a page.
//
// Lease gives nil bytes, and leaves f as it was, when it cannot: f is not
// a regular file on a local file system whose leases the kernel keeps
// (ext2/3/4, xfs, btrfs, tmpfs), it is empty or of 2 GiB or more, it is
// open for writing, or the lease or the mapping is refused (leases off,
// not the file's owner without CAP_LEASE); the caller reads it instead.
// Else f is the mapping's: release unmaps the bytes, gives the lease back
// and closes f (the lease goes with it); call it once nothing uses them.
func Lease(f *os.File) (data []byte, release func()) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil || !slices.Contains(leaseFS, int64(fs.Type)) {
		return nil, nil
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		return nil, nil
	}
	// The size is read under the lease: it cannot change from now on.
	st, err := f.Stat()
	if err == nil && st.Mode().IsRegular() {
		if data, unmap := Map(f, st.Size()); data != nil {
			return data, func() {
				unmap()
				f.Close()
			}
		}
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
	return nil, nil
}

// leaseFS are the file systems whose files Lease maps: local ones, where
// the lease keeps every writer out (a network or FUSE file system's file
// can change behind the kernel's back).
var leaseFS = []int64{unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC}
