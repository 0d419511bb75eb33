package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// checkPages reads every page of the file, as a write transaction finds
// it, and refuses a page whose contents point outside itself. bbolt trusts
// its pages: a commit frees every page it rewrites one overflow page at a
// time, so a garbled overflow count (up to 2^32) made it loop for minutes;
// a garbled key or value size made it copy hundreds of megabytes of
// whatever memory follows the map, and write them back. The fuzzer found
// both. Free pages are stepped over one at a time: their headers are
// stale. The file is read through f in large chunks, not through bbolt's
// map, so a page past the end of the file is an error here, not a fault.
func checkPages(tx *bolt.Tx, f *os.File) error {
	ps := tx.DB().Info().PageSize
	r := pageReader{f: f, ps: ps}
	for id := 2; ; { // 0 and 1 are the meta pages
		p, err := tx.Page(id)
		if err != nil {
			return err
		}
		if p == nil {
			return nil // past the last page
		}
		if p.Type == "free" {
			id++
			continue
		}
		last := id + p.OverflowCount
		if end, err := tx.Page(last); err != nil || end == nil {
			return badData("page %d (%s) claims %d overflow pages, past the end of the file", id, p.Type, p.OverflowCount)
		}
		data, err := r.pages(id, 1+p.OverflowCount)
		if err != nil {
			return err
		}
		if err := checkPage(data, id); err != nil {
			return err
		}
		id = last + 1
	}
}

// Page layout (bbolt's internal/common): a 16-byte header (id, flags,
// count, overflow), then count elements of 16 bytes; an element's key
// (and a leaf's value after it) starts pos bytes after the element.
const (
	pageHeader  = 16
	elementSize = 16
	flagBranch  = 0x01
	flagLeaf    = 0x02
	flagMeta    = 0x04
	flagFree    = 0x10
	leafBucket  = 0x01 // a leaf element that is a bucket
	bucketHead  = 16   // a bucket value: root page and sequence
)

// checkPage checks that the elements of the page in data lie inside it.
func checkPage(data []byte, id int) error {
	flags := binary.LittleEndian.Uint16(data[8:])
	count := uint64(binary.LittleEndian.Uint16(data[10:]))
	switch flags {
	case flagBranch, flagLeaf:
	case flagFree:
		if count == 0xffff && len(data) >= pageHeader+8 { // the real count is the first entry
			count = binary.LittleEndian.Uint64(data[pageHeader:]) + 1
		}
		if pageHeader+count*8 > uint64(len(data)) {
			return badData("freelist page %d lists %d pages, more than it holds", id, count)
		}
		return nil
	default:
		return badData("page %d has type %#x, not a branch, leaf or freelist page", id, flags)
	}
	if pageHeader+count*elementSize > uint64(len(data)) {
		return badData("page %d holds %d elements, more than fit in it", id, count)
	}
	for i := range count {
		at := pageHeader + i*elementSize
		e := data[at : at+elementSize]
		if flags == flagBranch {
			pos, ksize := uint64(binary.LittleEndian.Uint32(e)), uint64(binary.LittleEndian.Uint32(e[4:]))
			if at+pos+ksize > uint64(len(data)) {
				return badData("page %d: element %d runs past the page", id, i)
			}
			continue
		}
		eflags := binary.LittleEndian.Uint32(e)
		pos := uint64(binary.LittleEndian.Uint32(e[4:]))
		ksize, vsize := uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
		end := at + pos + ksize + vsize
		if end > uint64(len(data)) {
			return badData("page %d: element %d runs past the page", id, i)
		}
		if eflags&leafBucket == 0 {
			continue
		}
		v := data[end-vsize : end]
		if len(v) < bucketHead {
			return badData("page %d: bucket %d has a value of %d bytes", id, i, len(v))
		}
		if binary.LittleEndian.Uint64(v) == 0 { // an inline bucket: its page follows
			if len(v) < bucketHead+pageHeader {
				return badData("page %d: inline bucket %d is too short", id, i)
			}
			if err := checkPage(v[bucketHead:], id); err != nil {
				return err
			}
		}
	}
	return nil
}

// pageReader reads runs of pages from the file, a few megabytes at a time.
type pageReader struct {
	f          *os.File
	ps         int
	buf        []byte
	start, end int // the pages in buf
}

func (r *pageReader) pages(id, n int) ([]byte, error) {
	if id < r.start || id+n > r.end {
		size := max(n, (4<<20)/r.ps) * r.ps
		if cap(r.buf) < size {
			r.buf = make([]byte, size)
		}
		got, err := r.f.ReadAt(r.buf[:size], int64(id)*int64(r.ps))
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read page %d: %w", id, err)
		}
		r.buf, r.start, r.end = r.buf[:got], id, id+got/r.ps
		if id+n > r.end {
			return nil, badData("page %d (%d pages) is past the end of the file", id, n)
		}
	}
	off := (id - r.start) * r.ps
	return r.buf[off : off+n*r.ps], nil
}

// shortHex is a key for an error message: hexadecimal, cut at 64 bytes
// (a damaged file's key may be megabytes long).
func shortHex(k []byte) string {
	if len(k) <= 64 {
		return hex.EncodeToString(k)
	}
	return fmt.Sprintf("%s… (%d bytes)", hex.EncodeToString(k[:64]), len(k))
}
