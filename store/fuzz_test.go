package store

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// corrupt applies patch to a copy of base. The patch is a list of 4-byte
// records: a 23-bit offset (modulo the file's size), a flag and a byte.
// Without the flag the byte is XORed into the file; with it, the byte is
// written as a little-endian 64-bit number (page numbers, counts and
// offsets in bbolt's pages are such numbers) scaled by a power of two.
func corrupt(base, patch []byte) []byte {
	data := append([]byte(nil), base...)
	for ; len(patch) >= 4; patch = patch[4:] {
		off := (int(patch[0]&0x7f)<<16 | int(patch[1])<<8 | int(patch[2])) % len(data)
		v := patch[3]
		if patch[0]&0x80 == 0 {
			data[off] ^= v
			continue
		}
		if off+8 > len(data) {
			off = len(data) - 8
		}
		binary.LittleEndian.PutUint64(data[off:], uint64(v)<<(v%41))
	}
	return data
}

// FuzzOpenCorrupt opens corrupted copies of a real store and runs every
// reader and a few writers on them: each may fail, with an error that
// names the file, and none may crash or hang the process. (make fuzz runs
// it; go test runs the seeds.)
func FuzzOpenCorrupt(f *testing.F) {
	saved := writeGap
	writeGap = 0 // the writers of one iteration need no gap
	f.Cleanup(func() { writeGap = saved })
	path := filepath.Join(f.TempDir(), "real.db")
	fillRealStore(f, path)
	base, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	// Only the pages in use: a store opened for writing grows its file in
	// steps of bbolt's 16 MiB allocation (its map is 1 GiB), and faults in
	// the zeros past the last page would be most of the fuzzer's work.
	base = base[:metaOf(f, path).hwm*4096]
	rec := func(off int, flag bool, v byte) []byte {
		r := []byte{byte(off >> 16 & 0x7f), byte(off >> 8), byte(off), v}
		if flag {
			r[0] |= 0x80
		}
		return r
	}
	f.Add([]byte{})
	// One fault per page, in the first element (its position, or the page
	// it points to), and a few others: the fuzzer takes it from there.
	for p := 0; p*4096 < len(base); p++ {
		f.Add(rec(p*4096+16, true, 30))
	}
	f.Add(rec(8, false, 0xff))                                          // a meta page's flags
	f.Add(rec(4096+8, false, 0x80))                                     // the other meta page
	f.Add(rec(2*4096+10, false, 0x80))                                  // an element count
	f.Add(rec(3*4096+40, false, 0x55))                                  // inside an element
	f.Add(append(rec(4*4096+8, false, 3), rec(5*4096+16, true, 17)...)) // two faults at once
	f.Fuzz(func(t *testing.T, patch []byte) {
		if len(patch) > 64 {
			patch = patch[:64]
		}
		p := filepath.Join(t.TempDir(), "corrupt.db")
		if err := os.WriteFile(p, corrupt(base, patch), 0o600); err != nil {
			t.Fatal(err)
		}
		exerciseStore(t, p)
	})
}
