//go:build linux

package cgroupbpf

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestKernelClocksToWall: a kernel time read now, of either clock, comes
// out as the wall time now.
func TestKernelClocksToWall(t *testing.T) {
	var boot BootClock
	var mono MonoClock
	for _, c := range []struct {
		name string
		id   int32
		wall func(uint64) time.Time
	}{{"boot", unix.CLOCK_BOOTTIME, boot.Wall}, {"monotonic", unix.CLOCK_MONOTONIC, mono.Wall}} {
		var ts unix.Timespec
		before := time.Now()
		if err := unix.ClockGettime(c.id, &ts); err != nil {
			t.Fatal(err)
		}
		after := time.Now()
		got := c.wall(uint64(ts.Nano()))
		if got.Before(before.Add(-time.Millisecond)) || got.After(after.Add(time.Millisecond)) {
			t.Errorf("%s clock: %v, want between %v and %v", c.name, got, before, after)
		}
	}
}
