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
	js, err := p.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := p.Text(&text); err != nil {
		t.Fatal(err)
	}
	if len(js) < 2*renderPiece || text.Len() < renderPiece {
		t.Fatalf("JSON %d bytes, script %d: not several pieces of %d", len(js), text.Len(), renderPiece)
	}
	dir := t.TempDir()
	r := render(p, dir, 7)
	<-r.done
	if r.filesErr != nil {
		t.Fatal(r.filesErr)
	}
	for path, want := range map[string][]byte{planFile(dir, 7, ".json"): js, planFile(dir, 7, ".nft"): text.Bytes()} {
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes (%v), want the %d rendered", path, len(got), err, len(want))
		}
	}
	if back, err := gunzip(r.packed); err != nil || !bytes.Equal(back, js) {
		t.Errorf("packed: %d bytes back (%v), want the plan's %d", len(back), err, len(js))
	}

	// A file where the folder should be: no files, the plan packed all the same.
	blocked := dir + "/blocked"
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r = render(p, blocked, 8)
	<-r.done
	if r.filesErr == nil {
		t.Error("no error when the folder could not be made")
	}
	if back, err := gunzip(r.packed); err != nil || !bytes.Equal(back, js) {
		t.Errorf("packed without a folder: %d bytes back (%v), want the plan's %d", len(back), err, len(js))
	}
}
