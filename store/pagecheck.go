package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
)

// A file is checked before bbolt trusts it. bbolt follows its pages
// without bounds: the fuzzer (FuzzOpenCorrupt) found that a garbled
// overflow count made a commit free pages one by one for minutes, a
// garbled key size made a write copy hundreds of megabytes of whatever
// memory follows the map, and a page that points back at its parent made
// a read recurse until the stack overflowed, which kills the process
// (recover cannot catch it). checkFile walks the tree from the meta page,
// as bbolt would, without recursion, reading the file with pread (a page
// past the end is an error here, not a fault), and refuses a page that
// points outside itself or the file, a page reached twice, or a page of
// the wrong type. The pages are read from a read-only map of the file
// when it can be made (a pread a page cost ~10k system calls at 100k
// flows); a fault there (the file cut short meanwhile) is an error too.
// A Store checks a file once per state: after its own
// commit, or when it finds the transaction it checked, it does not read
// it again (store.go).

// Page layout (bbolt's internal/common): a 16-byte header (id, flags,
// count, overflow), then count elements of 16 bytes; an element's key
// (and a leaf's value after it) starts pos bytes after the element. The
// meta (after the header of pages 0 and 1): magic, version, page size,
// flags, root bucket (root page, sequence), freelist page, high water
// mark, transaction id, checksum (FNV-64a of what comes before it).
const (
	pageHeader  = 16
	elementSize = 16
	flagBranch  = 0x01
	flagLeaf    = 0x02
	flagFree    = 0x10
	leafBucket  = 0x01 // a leaf element that is a bucket
	bucketHead  = 16   // a bucket value: root page and sequence
	metaMagic   = 0xED0CDAED
	noFreelist  = ^uint64(0)
)

type meta struct{ root, freelist, hwm, txid uint64 }

// readMeta is the meta bbolt uses: the valid one with the higher
// transaction id.
func readMeta(f *os.File, ps int) (meta, error) {
	var best meta
	found := false
	buf := make([]byte, pageHeader+64)
	for p := range 2 {
		if _, err := f.ReadAt(buf, int64(p*ps)); err != nil {
			return meta{}, badData("read meta page %d: %w", p, err)
		}
		m := buf[pageHeader:]
		h := fnv.New64a()
		h.Write(m[:56])
		if binary.LittleEndian.Uint32(m) != metaMagic || binary.LittleEndian.Uint64(m[56:]) != h.Sum64() {
			continue
		}
		got := meta{root: binary.LittleEndian.Uint64(m[16:]), freelist: binary.LittleEndian.Uint64(m[32:]),
			hwm: binary.LittleEndian.Uint64(m[40:]), txid: binary.LittleEndian.Uint64(m[48:])}
		if !found || got.txid > best.txid {
			best, found = got, true
		}
	}
	if !found {
		return meta{}, badData("no valid meta page")
	}
	return best, nil
}

// checkFile checks the tree of the file f (page size ps) as of the meta
// of transaction txid.
func checkFile(f *os.File, ps int, txid uint64) (err error) {
	m, err := readMeta(f, ps)
	if err != nil {
		return err
	}
	if m.txid != txid {
		return badData("meta page of transaction %d, want %d", m.txid, txid)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if m.hwm < 2 || m.hwm > uint64(st.Size())/uint64(ps) {
		return badData("the file of %d bytes ends before its last page, %d", st.Size(), m.hwm)
	}
	w := pageWalker{f: f, ps: ps, hwm: m.hwm, seen: make([]uint64, (m.hwm+63)/64)}
	var unmap func()
	if !checkByPread {
		w.mapped, unmap = mapReadOnly(f, int64(m.hwm)*int64(ps))
	}
	if w.mapped != nil {
		defer unmap()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				err = badData("read the file's pages: %v", r)
			}
		}()
	}
	if m.freelist != noFreelist {
		data, err := w.run(m.freelist)
		if err != nil {
			return err
		}
		if err := checkFreelist(data, m.freelist); err != nil {
			return err
		}
	}
	w.todo = append(w.todo, m.root)
	for len(w.todo) > 0 {
		id := w.todo[len(w.todo)-1]
		w.todo = w.todo[:len(w.todo)-1]
		data, err := w.run(id)
		if err != nil {
			return err
		}
		if err := w.checkNode(data, id, false); err != nil {
			return err
		}
	}
	return nil
}

// checkByPread: checkFile reads pages with pread even when it can map
// the file (tests check both ways).
var checkByPread = false

// pageWalker reads the runs of pages of a tree and remembers which it read.
type pageWalker struct {
	f    *os.File
	ps   int
	hwm  uint64
	seen []uint64 // a bit a page
	todo []uint64 // pages to visit
	buf  []byte
	// mapped: the file's first hwm pages, mapped (nil: read with pread);
	// touched: bytes read from it since its pages were last dropped
	mapped  []byte
	touched uint64
}

// mappedResident bounds the bytes of the map read since they were last
// dropped from the process: a check of a large file does not make its
// resident memory the file's size (a learner's peak RSS).
var mappedResident uint64 = 64 << 20 // whatever the file's page size

// run reads page id with its overflow pages, each of which must be in
// the file and read for the first time.
func (w *pageWalker) run(id uint64) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, badData("a page points to page %d, outside the file's pages 2 to %d", id, w.hwm-1)
	}
	var head []byte
	if w.mapped != nil {
		if w.touched >= mappedResident {
			dropMapped(w.mapped) // nothing read from it before is used any more
			w.touched = 0
		}
		head = w.mapped[id*uint64(w.ps) : (id+1)*uint64(w.ps)]
	} else {
		if len(w.buf) < w.ps {
			w.buf = make([]byte, w.ps)
		}
		if _, err := w.f.ReadAt(w.buf[:w.ps], int64(id)*int64(w.ps)); err != nil {
			return nil, badData("read page %d: %w", id, err)
		}
		head = w.buf
	}
	n := 1 + uint64(binary.LittleEndian.Uint32(head[12:]))
	if id+n > w.hwm {
		return nil, badData("page %d claims %d overflow pages, past the end of the file!", id, n-1)
	}
	for p := id; p < id+n; p++ {
		if w.seen[p/64]&(1<<(p%64)) != 0 {
			return nil, badData("page %d is reached twice", p)
		}
		w.seen[p/64] |= 1 << (p % 64)
	}
	if w.mapped != nil {
		w.touched += n * uint64(w.ps)
		return w.mapped[id*uint64(w.ps) : (id+n)*uint64(w.ps)], nil
	}
	if n > 1 {
		size := int(n) * w.ps
		if len(w.buf) < size {
			w.buf = append(w.buf[:w.ps], make([]byte, size-w.ps)...)
		}
		if _, err := w.f.ReadAt(w.buf[w.ps:size], int64(id+1)*int64(w.ps)); err != nil && err != io.EOF {
			return nil, badData("read page %d: %w", id, err)
		}
	}
	return w.buf[:int(n)*w.ps], nil
}

func checkFreelist(data []byte, id uint64) error {
	if binary.LittleEndian.Uint16(data[8:]) != flagFree {
		return badData("freelist page %d is not a freelist page", id)
	}
	count := uint64(binary.LittleEndian.Uint16(data[10:]))
	if count == 0xffff { // the real count is the first entry
		count = binary.LittleEndian.Uint64(data[pageHeader:]) + 1
	}
	if count > uint64(len(data)-pageHeader)/8 {
		return badData("freelist page %d lists %d pages, more than it holds", id, count)
	}
	return nil
}

// checkNode checks that the elements of the branch or leaf page in data
// (a page of its own, or inline in a bucket's value) lie inside it, and
// queues the pages it points to.
func (w *pageWalker) checkNode(data []byte, id uint64, inline bool) error {
	if len(data) < pageHeader {
		return badData("page %d: inline bucket too short", id)
	}
	flags := binary.LittleEndian.Uint16(data[8:])
	count := uint64(binary.LittleEndian.Uint16(data[10:]))
	if flags != flagLeaf && (flags != flagBranch || inline) {
		return badData("page %d has type %#x where a branch or leaf page should be", id, flags)
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
			w.todo = append(w.todo, binary.LittleEndian.Uint64(e[8:]))
			continue
		}
		pos := uint64(binary.LittleEndian.Uint32(e[4:]))
		ksize, vsize := uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
		end := at + pos + ksize + vsize
		if end > uint64(len(data)) {
			return badData("page %d: element %d runs past the page", id, i)
		}
		if binary.LittleEndian.Uint32(e)&leafBucket == 0 {
			continue
		}
		if inline {
			return badData("page %d: an inline bucket holds a bucket", id)
		}
		v := data[end-vsize : end]
		if len(v) < bucketHead {
			return badData("page %d: bucket %d has a value of %d bytes", id, i, len(v))
		}
		if root := binary.LittleEndian.Uint64(v); root != 0 {
			w.todo = append(w.todo, root)
		} else if err := w.checkNode(v[bucketHead:], id, true); err != nil {
			return err
		}
	}
	return nil
}

// shortHex is a key for an error message: hexadecimal, cut at 64 bytes
// (a damaged file's key may be megabytes long).
func shortHex(k []byte) string {
	if len(k) <= 64 {
		return hex.EncodeToString(k)
	}
	return fmt.Sprintf("%s… (%d bytes)", hex.EncodeToString(k[:64]), len(k))
}
