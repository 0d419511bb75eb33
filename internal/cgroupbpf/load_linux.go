//go:build linux

package cgroupbpf

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Load loads spec's programs and maps into objs (a bpf2go Objects). A
// program the verifier refuses comes with the verifier's log; what names
// the programs in the error.
func Load(spec *ebpf.CollectionSpec, objs any, opts *ebpf.CollectionOptions, what string) error {
	err := spec.LoadAndAssign(objs, opts)
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("load %s: %+v", what, verr)
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", what, err)
	}
	return nil
}

// Ring reads the records of a ring buffer.
type Ring struct {
	Reader *ringbuf.Reader
	Name   string // for errors: "read NAME ring buffer"
	// Poll, when set, wakes the reader this often: for records the
	// programs submit without waking it.
	Poll time.Duration
	// Stopping, when set and true, makes a flush of the reader
	// (ringbuf.ErrFlushed) end the reading, once every record before it
	// was read.
	Stopping func() bool
}

// Each calls fn with every record until the reader is closed, or flushed
// while stopping. The record's bytes are reused by the next one.
func (r Ring) Each(fn func(raw []byte)) error {
	var rec ringbuf.Record
	for {
		if r.Poll > 0 {
			r.Reader.SetDeadline(time.Now().Add(r.Poll))
		}
		err := r.Reader.ReadInto(&rec)
		switch {
		case errors.Is(err, ringbuf.ErrFlushed) && r.Stopping != nil && r.Stopping():
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			continue
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("read %s ring buffer: %w", r.Name, err)
		}
		fn(rec.RawSample)
	}
}

// BootClock converts the kernel's boot-time nanoseconds
// (bpf_ktime_get_boot_ns) to wall time. It reads the boot clock, a system
// call too dear for every record, at most once a second, and so follows
// changes of the wall clock. Not safe for concurrent use: one a reader.
type BootClock struct {
	offset time.Duration
	when   time.Time
}

// Wall is the wall time of boot-time nanoseconds.
func (c *BootClock) Wall(bootNs uint64) time.Time {
	return kernelWall(unix.CLOCK_BOOTTIME, &c.offset, &c.when, bootNs)
}

// MonoClock is BootClock for CLOCK_MONOTONIC nanoseconds
// (bpf_ktime_get_ns, bpf_ktime_get_coarse_ns). The monotonic clock stops
// while the machine is suspended: a time from before a suspend comes out
// late by the suspend's length.
type MonoClock struct {
	offset time.Duration
	when   time.Time
}

// Wall is the wall time of monotonic nanoseconds.
func (c *MonoClock) Wall(monoNs uint64) time.Time {
	return kernelWall(unix.CLOCK_MONOTONIC, &c.offset, &c.when, monoNs)
}

// kernelWall converts ns of the kernel clock clk to wall time, reading
// clk's offset to the wall clock again when it is older than a second.
func kernelWall(clk int32, offset *time.Duration, when *time.Time, ns uint64) time.Time {
	if now := time.Now(); now.Sub(*when) > time.Second {
		var ts unix.Timespec
		_ = unix.ClockGettime(clk, &ts)
		*offset, *when = time.Duration(now.UnixNano()-ts.Nano()), now
	}
	return time.Unix(0, int64(ns)+int64(*offset))
}
