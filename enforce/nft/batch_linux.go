//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
)

// A replace's netlink batch written by hand. google/nftables encodes each
// set element in a handful of small allocations and mdlayher/netlink
// copies the whole batch into one buffer grown by doubling: at 100,000
// elements that is ~160 MB allocated for a ~10 MB batch. Here the small
// part of the table (table, sets, chain, rules) is still built by
// google/nftables, whose messages a test dial hands over in order, and
// the elements of the named sets are encoded straight into chunks of the
// batch, byte for byte as google/nftables would (TestBatchBytesAsLibrary).
// The batch goes to the kernel in one sendmsg: nfnetlink runs a batch as
// one transaction only when it arrives whole, in one skb.

// batchChunk is the size of the buffers the batch is written into; a
// message never straddles two, so each is a whole number of messages.
const batchChunk = 4 << 20

// nlmsgFlagsNew are google/nftables' flags for a message that creates.
const nlmsgFlagsNew = netlink.Request | netlink.Acknowledge | netlink.Create

// batchWriter is one transaction's messages, written into chunks.
type batchWriter struct {
	bufs [][]byte
	seq  uint32 // the last sequence number used
	msgs []batchMsg
	err  error // a message google/nftables could not marshal, or too large
}

// batchMsg says what a message of the batch is, for an error report.
type batchMsg struct {
	seq         uint32
	typ         uint16
	ack         bool
	answered    bool
	set         string // elements: the set, and the range of them
	first, last int
}

func newBatchWriter() *batchWriter {
	w := &batchWriter{}
	w.control(unix.NFNL_MSG_BATCH_BEGIN)
	return w
}

// control writes a batch begin or end message.
func (w *batchWriter) control(typ uint16) {
	b := w.header(typ, netlink.Request, 4)
	copy(b, []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES})
}

// reserve returns n bytes at the end of the batch, in one chunk.
func (w *batchWriter) reserve(n int) []byte {
	if len(w.bufs) == 0 || cap(w.bufs[len(w.bufs)-1])-len(w.bufs[len(w.bufs)-1]) < n {
		w.bufs = append(w.bufs, newChunk(max(batchChunk, n)))
	}
	last := &w.bufs[len(w.bufs)-1]
	start := len(*last)
	*last = (*last)[:start+n]
	return (*last)[start:]
}

// header writes a message header for dataLen bytes of payload and returns
// the space of the payload (padded).
func (w *batchWriter) header(typ uint16, flags netlink.HeaderFlags, dataLen int) []byte {
	w.seq++
	n := 16 + align4(dataLen)
	b := w.reserve(n)
	binary.NativeEndian.PutUint32(b[0:4], uint32(16+dataLen))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], uint16(flags))
	binary.NativeEndian.PutUint32(b[8:12], w.seq)
	binary.NativeEndian.PutUint32(b[12:16], 0)
	w.msgs = append(w.msgs, batchMsg{seq: w.seq, typ: typ, ack: flags&netlink.Acknowledge != 0})
	return b[16:]
}

// newChunk maps n bytes outside the Go heap, faulted in at once: the
// batch (~80 MB at a million elements) then neither raises the heap's
// collection target nor stays in the process's memory after release.
func newChunk(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, 0, n)
	}
	return b[:0]
}

// release gives the batch's memory back; the writer is not used after.
func (w *batchWriter) release() {
	for _, b := range w.bufs {
		_ = unix.Munmap(b[:cap(b)]) // EINVAL for a chunk of the Go heap: it stays the collector's
	}
	w.bufs = nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// capture is the test dial of the connection google/nftables builds the
// small part of the table on: its messages go into the batch, in order,
// and each gets the acknowledgement Flush waits for.
func (w *batchWriter) capture(reqs []netlink.Message) ([]netlink.Message, error) {
	if reqs == nil {
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 20)}}, nil
	}
	for _, m := range reqs {
		typ := uint16(m.Header.Type)
		if typ == unix.NFNL_MSG_BATCH_BEGIN || typ == unix.NFNL_MSG_BATCH_END {
			continue
		}
		copy(w.header(typ, m.Header.Flags, len(m.Data)), m.Data)
	}
	return nil, nil
}

// elemSource is the elements of one set, as the writer reads them.
type elemSource interface {
	Len() int
	keyLen(i int) int
	putKey(b []byte, i int)
	comment(i int) string
	timeout(i int) time.Duration
}

// planElems are an allow set's elements: uid . ip . proto . port
// (elementKey), encoded in place.
type planElems []plan.Element

func (p planElems) Len() int { return len(p) }

func (p planElems) keyLen(i int) int { return 4 + p[i].IP.BitLen()/8 + 8 }

func (p planElems) putKey(b []byte, i int) { appendElementKey(b[:0], &p[i]) }

func (p planElems) comment(i int) string { return p[i].Comment }

func (planElems) timeout(int) time.Duration { return 0 }

// libElems are elements already made for google/nftables: keys, comments
// and, in a set with timeouts, timeouts.
type libElems struct {
	elems      []nftables.SetElement
	hasTimeout bool
}

func (l libElems) Len() int               { return len(l.elems) }
func (l libElems) keyLen(i int) int       { return len(l.elems[i].Key) }
func (l libElems) putKey(b []byte, i int) { copy(b, l.elems[i].Key) }
func (l libElems) comment(i int) string   { return l.elems[i].Comment }
func (l libElems) timeout(i int) time.Duration {
	if !l.hasTimeout {
		return 0
	}
	return l.elems[i].Timeout
}

// check refuses what the writer does not encode (intervals, maps).
func (l libElems) check() error {
	for _, e := range l.elems {
		if e.IntervalEnd || len(e.KeyEnd) > 0 || len(e.Val) > 0 || e.VerdictData != nil || e.Expires != 0 {
			return errors.New("the batch writer encodes keys, comments and timeouts only")
		}
	}
	return nil
}

// elemSize is the encoded size of element i: its nest, the key's nest and
// value, the timeout, the comment as userdata.
func elemSize(src elemSource, i int) int {
	n := 4 + 4 + 4 + align4(src.keyLen(i))
	if src.timeout(i) != 0 {
		n += 12
	}
	if c := src.comment(i); c != "" {
		n += 4 + align4(2+len(c)+1)
	}
	return n
}

// elements writes the elements of set s as NEWSETELEM messages, cut as
// chunks cuts them.
func (w *batchWriter) elements(s *nftables.Set, src elemSource) {
	for start := 0; start < src.Len(); {
		end, size, est := start, 0, 0
		for end < src.Len() {
			sz := 48 + src.keyLen(end) + len(src.comment(end))
			if est+sz > maxBatchAttr && end > start {
				break
			}
			est += sz
			size += elemSize(src, end)
			end++
		}
		w.elemMessage(s, src, start, end, size)
		start = end
	}
}

// elemMessage writes elements [start, end) of set s, size bytes of them,
// as one message.
func (w *batchWriter) elemMessage(s *nftables.Set, src elemSource, start, end, size int) {
	if 4+size > 0xffff {
		w.err = fmt.Errorf("set %s: %d bytes of elements in one message", s.Name, size)
		return
	}
	head := 4 + 4 + align4(len(s.Name)+1) + 8 + 4 + align4(len(s.Table.Name)+1) + 4
	b := w.header(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM, nlmsgFlagsNew, head+size)
	m := &w.msgs[len(w.msgs)-1]
	m.set, m.first, m.last = s.Name, start, end-1
	b[0], b[1], b[2], b[3] = byte(s.Table.Family), unix.NFNETLINK_V0, 0, 0
	o := 4
	o = putString(b, o, unix.NFTA_SET_NAME, s.Name)
	o = putAttr(b, o, unix.NFTA_LOOKUP_SET_ID, 4)
	binary.BigEndian.PutUint32(b[o:], s.ID)
	o = putString(b, o+4, unix.NFTA_SET_TABLE, s.Table.Name)
	o = putAttr(b, o, unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, size)
	for i := start; i < end; i++ {
		o = putElem(b, o, src, i, i-start+1)
	}
}

// putAttr writes an attribute header for n bytes of data at b[o:] and
// returns the offset of the data.
func putAttr(b []byte, o int, typ uint16, n int) int {
	binary.NativeEndian.PutUint16(b[o:], uint16(4+n))
	binary.NativeEndian.PutUint16(b[o+2:], typ)
	return o + 4
}

// putString writes a NUL-terminated string attribute; it returns the
// offset after its padding.
func putString(b []byte, o int, typ uint16, s string) int {
	o = putAttr(b, o, typ, len(s)+1)
	n := copy(b[o:], s)
	clear(b[o+n : o+align4(len(s)+1)])
	return o + align4(len(s)+1)
}

// putElem writes element i of src as item number nr of a list.
func putElem(b []byte, o int, src elemSource, i, nr int) int {
	o = putAttr(b, o, uint16(nr)|unix.NLA_F_NESTED, elemSize(src, i)-4)
	kl := src.keyLen(i)
	o = putAttr(b, o, unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED, 4+align4(kl))
	o = putAttr(b, o, unix.NFTA_DATA_VALUE, kl)
	src.putKey(b[o:o+kl], i)
	clear(b[o+kl : o+align4(kl)])
	o += align4(kl)
	if t := src.timeout(i); t != 0 {
		o = putAttr(b, o, unix.NFTA_SET_ELEM_TIMEOUT, 8)
		binary.BigEndian.PutUint64(b[o:], uint64(t.Milliseconds()))
		o += 8
	}
	if c := src.comment(i); c != "" {
		// userdata.AppendString(nil, NFTNL_UDATA_SET_ELEM_COMMENT, c)
		n := 2 + len(c) + 1
		o = putAttr(b, o, unix.NFTA_SET_ELEM_USERDATA, n)
		b[o], b[o+1] = 0, byte(len(c)+1)
		copy(b[o+2:], c)
		clear(b[o+2+len(c) : o+align4(n)])
		o += align4(n)
	}
	return o
}

// buffers ends the batch and returns it.
func (w *batchWriter) buffers() [][]byte {
	w.control(unix.NFNL_MSG_BATCH_END)
	return w.bufs
}

// size is the batch's length in bytes.
func (w *batchWriter) size() int {
	n := 0
	for _, b := range w.bufs {
		n += len(b)
	}
	return n
}
