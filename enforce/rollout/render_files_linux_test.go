//go:build linux

package rollout

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// TestWriteAtomicThenNotReady: a file whose turn does not come is not
// put in place, and leaves no temporary file.
func TestWriteAtomicThenNotReady(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "plan-1.json")
	write := func(f *os.File) error { _, err := f.Write([]byte("{}")); return err }
	if err := writeAtomicThen(path, write, func() bool { return false }); !errors.Is(err, errNotReady) {
		t.Fatalf("error %v, want %v", err, errNotReady)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %v", entries)
	}
}

// TestRenderWritesBothFiles: render writes plan-N.nft and plan-N.json as
// it made them; when plan-N.nft cannot be written, plan-N.json (which
// says both are there) is not put in place either.
func TestRenderWritesBothFiles(t *testing.T) {
	p := planOf(plan.ModeEnforce, 443, 22)
	dir := t.TempDir()
	renderedWhole(t, p, dir, 3)
	// plan-4.nft is a folder: the script cannot go in its place.
	if err := os.Mkdir(planFile(dir, 4, ".nft"), 0o700); err != nil {
		t.Fatal(err)
	}
	r := render(p, dir, 4)
	<-r.done
	if r.filesErr == nil {
		t.Error("no error when plan-4.nft could not be written")
	}
	if _, err := os.Stat(planFile(dir, 4, ".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plan-4.json without plan-4.nft: %v", err)
	}
}

func gunzip(packed []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// renderedWhole renders p as generation n in dir, and checks that
// plan-N.json, plan-N.nft and the packing are byte for byte what JSON and
// Text make of p, which it gives.
func renderedWhole(t *testing.T, p *plan.Plan, dir string, n uint64) (js, text []byte) {
	t.Helper()
	js, err := p.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := p.Text(&b); err != nil {
		t.Fatal(err)
	}
	r := render(p, dir, n)
	<-r.done
	if r.filesErr != nil {
		t.Fatal(r.filesErr)
	}
	for path, want := range map[string][]byte{planFile(dir, n, ".json"): js, planFile(dir, n, ".nft"): b.Bytes()} {
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) || len(want) == 0 {
			t.Errorf("%s: %d bytes (%v), want the %d rendered", path, len(got), err, len(want))
		}
	}
	if back, err := gunzip(r.packed); err != nil || !bytes.Equal(back, js) {
		t.Errorf("packed: %d bytes back (%v), want the plan's %d", len(back), err, len(js))
	}
	return js, b.Bytes()
}
