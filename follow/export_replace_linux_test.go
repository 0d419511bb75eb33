//go:build linux

package follow

import "github.com/cilium/ebpf"

// SetSpecHook makes the followers started next change their spec before
// loading it (another version's maps), until restore.
func SetSpecHook(h func(*ebpf.CollectionSpec)) (restore func()) {
	specHook = h
	return func() { specHook = nil }
}
