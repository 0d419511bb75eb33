package cli

import (
	"os"
	"runtime"
	"runtime/debug"
	"sync"
)

// The collector's pacing for a command that builds a large plan once and
// exits: FewerGCs sets how far the heap grows past what is live, and
// FirstGCAt keeps the collector off until the heap first reaches a size
// (the runtime starts at 4 MiB times GOGC/100: a 100k-flow delta apply
// collected twice in its first 60 MB, 25 ms of CPU for little memory
// given back). GOGC in the environment overrides both.
var gcPace struct {
	mu sync.Mutex
	// gated: the first collection has not run yet; percent is then what
	// FewerGCs asked for, set once it has.
	gated   bool
	percent int
}

// defaultHeapMinimum is the runtime's first heap goal at GOGC=100.
const defaultHeapMinimum = 4 << 20

// FewerGCs lets the heap grow to (100+percent)% of what is live before
// the garbage collector runs, unless GOGC says otherwise: for a command
// that builds a large plan once and exits, collecting less often saves
// CPU for a little more memory. Before the first collection of
// FirstGCAt, it takes effect once that collection has run.
func FewerGCs(percent int) {
	if os.Getenv("GOGC") != "" {
		return
	}
	gcPace.mu.Lock()
	defer gcPace.mu.Unlock()
	if gcPace.gated {
		gcPace.percent = percent
		return
	}
	debug.SetGCPercent(percent)
}

// FirstGCAt keeps the garbage collector off until the heap reaches about
// bytes (the first collection's goal), unless GOGC says otherwise; from
// that collection on, the heap's goal follows FewerGCs (or 100). Call it
// before the heap grows, once.
func FirstGCAt(bytes int) {
	if os.Getenv("GOGC") != "" || bytes <= defaultHeapMinimum {
		return
	}
	gcPace.mu.Lock()
	defer gcPace.mu.Unlock()
	if gcPace.gated {
		return
	}
	// The runtime's heap minimum is 4 MiB times the percent over 100;
	// the percent itself does not matter until the first collection,
	// when the hook below puts the wanted one back.
	gcPace.gated = true
	gcPace.percent = debug.SetGCPercent(bytes / (defaultHeapMinimum / 100))
	afterGC(func() {
		gcPace.mu.Lock()
		defer gcPace.mu.Unlock()
		gcPace.gated = false
		debug.SetGCPercent(gcPace.percent)
	})
}

// afterGC runs f once, after the next garbage collection (on the
// finalizer goroutine).
func afterGC(f func()) {
	// Not a tiny allocation (those share a block, and the block's
	// finalizer may wait for its neighbours).
	sentinel := &struct {
		_ [32]byte
		p *int
	}{}
	runtime.SetFinalizer(sentinel, func(any) { f() })
}
