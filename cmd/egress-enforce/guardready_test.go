package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestAwaitGuard: apply goes on only after the guard's ready line; a guard
// that exits first, says something else, or says nothing in time is an
// error that says which.
func TestAwaitGuard(t *testing.T) {
	for _, c := range []struct {
		name  string
		write func(w *os.File)
		want  string
	}{
		{"ready", func(w *os.File) { w.WriteString(guardReadyLine); w.Close() }, ""},
		{"ready and still running", func(w *os.File) { w.WriteString(guardReadyLine) }, ""},
		{"exited", func(w *os.File) { w.Close() }, "exited before it was guarding"},
		{"exited mid-line", func(w *os.File) { w.WriteString("guar"); w.Close() }, "exited before it was guarding"},
		{"something else", func(w *os.File) { w.WriteString("panic: x\n"); w.Close() }, "not that it is guarding"},
		{"silent", func(w *os.File) {}, "was not guarding after 200ms"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			c.write(w)
			err = awaitGuard(r, 200*time.Millisecond)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("ready guard: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}
