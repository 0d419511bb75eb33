//go:build unix && !linux

package mapfile

import "os"

// Lease gives nil bytes where the kernel has no leases (not Linux): the
// caller reads the file instead.
func Lease(f *os.File) (data []byte, release func()) {
	return nil, nil
}
