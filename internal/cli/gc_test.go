package cli

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// gcPercent is the collector's percent now.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestFirstGCAtThenFewerGCs: until the first collection the percent is
// the gate's (a heap minimum of the size asked), FewerGCs's percent is
// kept for after it, and the first collection puts it in place.
func TestFirstGCAtThenFewerGCs(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Setenv("GOGC", "")
		os.Unsetenv("GOGC")
	}
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })

	FirstGCAt(160 << 20)
	if got, want := gcPercent(), 160<<20/(defaultHeapMinimum/100); got != want {
		t.Fatalf("before the first collection: percent %d, want %d (a 160 MiB first goal)", got, want)
	}
	FewerGCs(300)
	if got := gcPercent(); got == 300 {
		t.Fatal("FewerGCs before the first collection undid the gate")
	}
	runtime.GC()
	deadline := time.Now().Add(time.Minute)
	for gcPercent() != 300 {
		if time.Now().After(deadline) {
			t.Fatalf("after a collection: percent %d, want FewerGCs's 300", gcPercent())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	FewerGCs(1000)
	if got := gcPercent(); got != 1000 {
		t.Fatalf("FewerGCs after the gate: percent %d, want 1000", got)
	}
}

// TestFirstGCAtGOGC: GOGC in the environment wins over both.
func TestFirstGCAtGOGC(t *testing.T) {
	t.Setenv("GOGC", "50")
	old := debug.SetGCPercent(50)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	FirstGCAt(160 << 20)
	FewerGCs(300)
	if got := gcPercent(); got != 50 {
		t.Fatalf("with GOGC=50: percent %d", got)
	}
}
