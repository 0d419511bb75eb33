//go:build linux

package cgroupbpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf/link"
)

// ReplacePin pins l at path in place of the link pinned there before (by
// a program that did not stop cleanly, or an earlier run). l is attached
// already and pinned beside the old link first, so that no moment is
// without one and a failure leaves the old pin; then the old link is
// unpinned and closed (detached) and l's pin moved over it. replaced says
// whether there was an old link; what names the link in errors ("mark
// check").
func ReplacePin(l link.Link, path, what string) (replaced bool, err error) {
	if err := l.Pin(path + "_new"); err != nil {
		return false, fmt.Errorf("pin the %s: %w", what, err)
	}
	old, err := link.LoadPinnedLink(path, nil)
	switch {
	case err == nil:
		replaced = true
		_ = old.Unpin()
		_ = old.Close()
	case !errors.Is(err, os.ErrNotExist):
		_ = l.Unpin()
		return false, fmt.Errorf("open the pinned %s %s: %w", what, path, err)
	}
	if err := l.Pin(path); err != nil { // moves the pin
		_ = l.Unpin()
		return replaced, fmt.Errorf("pin the %s: %w", what, err)
	}
	return replaced, nil
}
