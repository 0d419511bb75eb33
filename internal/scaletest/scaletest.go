// Package scaletest is the tests' check that work grows with a hostile
// input's size no faster than the size: timed on the same machine, the
// best of three runs, against a limit far above what linear work takes
// and far below what a search per item made of it. It asserts no speed:
// only a ratio of two figures of one machine, with a floor of seconds.
package scaletest

import (
	"testing"
	"time"
)

// Best runs the work prepare makes (untimed) three times and gives the
// quickest run; a run past limit fails t at once (the work is left to
// finish in the background). what names the work in the failure.
func Best(t testing.TB, what string, limit time.Duration, prepare func() func()) time.Duration {
	t.Helper()
	var best time.Duration
	for range 3 {
		work := prepare()
		done := make(chan struct{})
		start := time.Now()
		go func() { work(); close(done) }()
		select {
		case <-done:
		case <-time.After(limit):
			t.Fatalf("%s took more than %v", what, limit)
		}
		if d := time.Since(start); best == 0 || d < best {
			best = d
		}
	}
	return best
}

// Linear checks that the work of size n costs about ten times the work
// of size n/10: prepare makes the inputs of a size, untimed, and returns
// the work. A search per item makes the ratio a hundred; the limit is
// 50 (linear work of these sizes measured 8-36: caches, maps growing),
// and at least 3 s (the VM's noise and its load make small figures
// swing).
func Linear(t testing.TB, what string, n int, prepare func(n int) func()) {
	t.Helper()
	small := Best(t, what, time.Hour, func() func() { return prepare(n / 10) })
	large := Best(t, what, max(50*small, 3*time.Second), func() func() { return prepare(n) })
	t.Logf("%s: %d %v, %d %v: %.1fx", what, n/10, small, n, large, float64(large)/float64(small))
}
