package store

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestCheckFileMappedAsPread: the file check reads its pages from a map
// of the file; it gives what reading them with pread gives, for a whole
// store and for copies of it with bytes garbled in its pages (some
// checked good, some refused with the same error), also when the pages
// read are dropped from the process every few pages.
func TestCheckFileMappedAsPread(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	fillRealStore(t, path)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := metaOf(t, path)
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(data []byte) (string, string) {
		p := filepath.Join(dir, "garbled.db")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var got [2]string
		for i, pread := range []bool{false, true} {
			checkByPread = pread
			err := checkFile(f, 4096, m.txid)
			checkByPread = false
			if err != nil {
				got[i] = err.Error()
			}
		}
		return got[0], got[1]
	}
	if mapped, pread := check(orig); mapped != "" || pread != "" {
		t.Fatalf("the whole store: mapped %q, pread %q", mapped, pread)
	}
	good, bad := 0, 0
	resident := mappedResident
	t.Cleanup(func() { mappedResident = resident })
	for i := range 400 {
		mappedResident = []uint64{resident, 3 * 4096}[i%2] // pages dropped while checked, every 3
		data := append([]byte(nil), orig...)
		for range 1 + rng.IntN(3) {
			at := 2*4096 + rng.IntN(int(m.hwm-2)*4096) // past the meta pages
			data[at] = byte(rng.IntN(256))
		}
		mapped, pread := check(data)
		if mapped != pread {
			t.Fatalf("mapped %q, pread %q", mapped, pread)
		}
		if mapped == "" {
			good++
		} else {
			bad++
		}
	}
	if good == 0 || bad == 0 {
		t.Fatalf("%d garbled copies checked good, %d refused: both must happen", good, bad)
	}
}
