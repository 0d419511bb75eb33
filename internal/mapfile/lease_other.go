//go:build unix && !linux

package mapfile

// Leased gives nil bytes where the kernel has no leases (not Linux): the
// caller reads the file instead.
func Leased(path string) (data []byte, release func()) {
	return nil, func() {}
}
