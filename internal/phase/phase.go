// Package phase marks the phases of a command, for diagnosing where its
// wall time goes.
package phase

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// EGRESS_PHASES=1: Mark writes a line to stderr at each call, with the
// milliseconds since the runtime started (or since EGRESS_PHASES, when it
// is a time in nanoseconds since 1970, e.g. "$(date +%s%N)" before the
// command) and since the mark before. Off (the default), Mark costs a
// load and a branch.
var phases = struct {
	on   bool
	mu   sync.Mutex
	t0   time.Time
	last time.Time
}{on: os.Getenv("EGRESS_PHASES") != "", t0: start(os.Getenv("EGRESS_PHASES"))}

func start(env string) time.Time {
	if ns, err := strconv.ParseInt(env, 10, 64); err == nil && ns > 1e18 {
		return time.Unix(0, ns)
	}
	return time.Now()
}

// Mark marks that what is named has happened (EGRESS_PHASES only).
func Mark(name string) {
	if !phases.on {
		return
	}
	now := time.Now()
	phases.mu.Lock()
	defer phases.mu.Unlock()
	last := phases.last
	if last.IsZero() {
		last = phases.t0
	}
	phases.last = now
	fmt.Fprintf(os.Stderr, "phase %7.1f ms (+%6.1f) %s\n", ms(now.Sub(phases.t0)), ms(now.Sub(last)), name)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
