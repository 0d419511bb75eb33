//go:build linux

// Package benchutil holds what the benchmark programs share: cleanups that
// run once (also on a signal), progress logging, unique names, JSON output
// and the kernel release for the report.
package benchutil

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
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

// OnSignal makes SIGINT, SIGTERM and SIGHUP stop the program: stop (when
// not nil) is called with the signal, then the cleanups run and the
// program exits with status 130. A second signal does not wait for stop to
// return.
func (c *Cleaner) OnSignal(stop func(os.Signal)) {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		if stop != nil {
			stopped := make(chan struct{})
			go func() { stop(s); close(stopped) }()
			select {
			case <-stopped:
			case <-sigc:
			}
		}
		c.Run()
		os.Exit(130)
	}()
}

// RandomID is eight random hex digits, for the names of namespaces and
// cgroups that must not collide with another run's.
func RandomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WriteJSON writes v to w as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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

// Require says why a benchmark cannot run: not root (why says what it
// does that needs root), or a tool missing from PATH.
func Require(name, why string, tools ...string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s: run as root (%s)", name, why)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s: %s not found in PATH", name, tool)
		}
	}
	return nil
}

// Netns creates the network namespace name with its loopback up, and
// registers its removal.
func (c *Cleaner) Netns(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	c.Add(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			Logf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("set lo up in %s: %v: %s", name, err, out)
	}
	return nil
}

// Start checks what Require checks, then returns a Cleaner whose
// cleanups also run on a signal (OnSignal): the start of a benchmark
// that needs nothing more on a signal. The caller defers its Run.
func Start(name, why string, tools ...string) (*Cleaner, error) {
	if err := Require(name, why, tools...); err != nil {
		return nil, err
	}
	cl := &Cleaner{}
	cl.OnSignal(nil)
	return cl, nil
}
