//go:build linux

package rollout

import (
	"bytes"
	"os"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// TestRenderInPieces: a plan whose JSON and script take several of
// render's pieces and buffers is written and packed whole, byte for byte
// what JSON and Text make of it; with the folder not there to write in,
// it is still packed for the store.
func TestRenderInPieces(t *testing.T) {
	ports := make([]uint16, 30000)
	for i := range ports {
		ports[i] = uint16(i + 1)
	}
	p := planOf(plan.ModeEnforce, ports...)
	dir := t.TempDir()
	js, text := renderedWhole(t, p, dir, 7)
	if len(js) < 2*renderPiece || len(text) < renderPiece {
		t.Fatalf("JSON %d bytes, script %d: not several pieces of %d", len(js), len(text), renderPiece)
	}

	// A file where the folder should be: no files, the plan packed all the same.
	blocked := dir + "/blocked"
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := render(p, blocked, 8)
	<-r.done
	if r.filesErr == nil {
		t.Error("no error when the folder could not be made")
	}
	if back, err := gunzip(r.packed); err != nil || !bytes.Equal(back, js) {
		t.Errorf("packed without a folder: %d bytes back (%v), want the plan's %d", len(back), err, len(js))
	}
}
