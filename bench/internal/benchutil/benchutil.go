//go:build linux

// Package benchutil holds what the benchmark programs share: cleanups that
// run once, progress logging, and the kernel release for the report.
package benchutil

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Cleaner runs registered cleanups once, last registered first.
type Cleaner struct {
	mu   sync.Mutex
	fns  []func()
	done bool
}

// Add registers f.
func (c *Cleaner) Add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

// Run runs the cleanups; later calls do nothing.
func (c *Cleaner) Run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
}

// Logf prints a time-stamped progress line to standard error.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// KernelRelease is uname -r, or "?".
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}
