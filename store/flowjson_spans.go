package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/json"
	"hash"
	"math"
)

// An apply of an export that changed in a few flows since the last one
// reads only those again (enforce/baseline's memo): the flows whose bytes
// did not change are the flows they were. DecodeExportSpans says where
// each flow of an export is; DiffExport reads an export against an
// earlier one.

// Span is where a flow is in an export's bytes: [Start, End).
type Span struct{ Start, End int32 }

// DecodeExportSpans is DecodeExport, and where each of the export's flows
// is in data (nil when the fast reader did not read it, or data is 2 GiB
// or more). The export's flows are e.Flows followed by rest: a large
// export's flows read in halves on two cores stay in two slices (rest nil
// when they were read in one go), so the second half is not moved behind
// the first (at 1M flows, ~140 MB copied into fresh pages).
func DecodeExportSpans(data []byte, e *Export) (spans []Span, rest []Flow, err error) {
	if len(data) >= math.MaxInt32 {
		return nil, nil, DecodeExport(data, e)
	}
	spans = []Span{}
	r := jreader{b: data, ok: true, intern: map[string]string{}, spans: &spans, rest: &rest}
	var out Export
	r.export(&out)
	if r.end() && len(spans) == len(out.Flows)+len(rest) {
		*e = out
		return spans, rest, nil
	}
	return nil, nil, json.Unmarshal(data, e)
}

// DecodeFlowJSON decodes one flow object of an export (the bytes of a
// Span) with the fast reader; false when it cannot (DecodeExport would
// have gone to encoding/json).
func DecodeFlowJSON(b []byte, f *Flow) bool {
	r := jreader{b: b, ok: true}
	r.flow(f, false)
	return r.end()
}

// FlowSum is a keyed digest of one flow's bytes: an earlier export's flow
// is known by its length and its sum, not by a copy of its bytes.
type FlowSum [16]byte

// FlowSummer makes the FlowSums of one secret key: the GMAC tag of the
// bytes (AES-256-GCM of nothing, the bytes as its additional data, one
// nonce for all: GHASH keyed by the secret makes two different byte
// strings of n blocks give the same sum with a chance of n in 2^128,
// whatever they are, for whoever does not know the key; the sums are
// never shown). Where GCM cannot be had (FIPS 140-only mode), SHA-256 of
// the key and the bytes, cut to 128 bits (the sums of one mode are not
// those of the other: nothing is taken for unchanged). Not for
// concurrent use.
type FlowSummer struct {
	gcm   cipher.AEAD
	nonce [12]byte
	h     hash.Hash
	block [sha256.BlockSize]byte
	out   [sha256.Size]byte
}

// NewFlowSummer is the FlowSummer of key.
func NewFlowSummer(key [32]byte) *FlowSummer {
	s := &FlowSummer{}
	if c, err := aes.NewCipher(key[:]); err == nil {
		s.gcm, _ = cipher.NewGCM(c)
	}
	if s.gcm == nil {
		s.h = sha256.New()
		copy(s.block[:], key[:])
	}
	return s
}

// Sum is the sum of b.
func (s *FlowSummer) Sum(b []byte) FlowSum {
	if s.gcm != nil {
		return FlowSum(s.gcm.Seal(s.out[:0], s.nonce[:], nil, b))
	}
	s.h.Reset()
	s.h.Write(s.block[:])
	s.h.Write(b)
	return FlowSum(s.h.Sum(s.out[:0])[:16])
}

// FlowRef is one flow of an export read by DiffExport: where it is, and
// which flow of the earlier export has its bytes (-1: none; then Flow is
// the flow read).
type FlowRef struct {
	Span
	Old  int32
	Flow *Flow
}

// DiffExport reads the export data against an earlier one whose flows
// had lengths oldLens, sums oldSums (of sums) and keys oldKeys (the keys
// after netip.Addr.Unmap), in strictly increasing order. A flow whose
// bytes are those of the earlier export's flow at the same place in the
// key order (the same length and sum) is not read again (its FlowRef
// names it); the others are read. The header
// is read into e, without its flows. It returns false where DecodeExport
// could read what it cannot: anything its fast reader does not read, or
// flows whose keys (after Unmap) are not in strictly increasing order.
func DiffExport(data []byte, sums *FlowSummer, oldLens []int32, oldSums []FlowSum, oldKeys []FlowKey, e *Export) ([]FlowRef, bool) {
	if len(data) >= math.MaxInt32 || len(oldLens) != len(oldKeys) || len(oldSums) != len(oldKeys) {
		return nil, false
	}
	d := exportDiff{summer: sums, lens: oldLens, sums: oldSums, keys: oldKeys, refs: make([]FlowRef, 0, len(oldKeys)+len(oldKeys)/8+16)}
	r := jreader{b: data, ok: true, intern: map[string]string{}, flowsOf: d.flows}
	var out Export
	r.export(&out)
	if !r.end() || d.bad {
		return nil, false
	}
	*e = out
	return d.refs, true
}

// exportDiff is the state of a DiffExport.
type exportDiff struct {
	summer *FlowSummer
	lens   []int32
	sums   []FlowSum
	keys   []FlowKey
	k      int // the next of the earlier flows
	refs   []FlowRef
	last   FlowKey
	bad    bool
}

// flows reads the flows of the export (from its '[').
func (d *exportDiff) flows(r *jreader, e *Export) {
	if len(d.refs) > 0 || !r.lit('[') {
		d.bad = true
		return
	}
	e.Flows = []Flow{}
	if r.peek() == ']' {
		r.i++
		return
	}
	for r.ok && !d.bad {
		r.ws()
		key, ok := d.reuse(r)
		if !ok {
			key = d.read(r)
		}
		if len(d.refs) > 1 && d.last.Compare(key) >= 0 {
			d.bad = true
			return
		}
		d.last = key
		if r.peek() == ']' {
			r.i++
			return
		}
		r.lit(',')
	}
}

// reuse takes the next earlier flow when its bytes are next in r.
func (d *exportDiff) reuse(r *jreader) (FlowKey, bool) {
	if d.k >= len(d.lens) {
		return FlowKey{}, false
	}
	n := int(d.lens[d.k])
	if n <= 1 || r.i+n > len(r.b) || r.b[r.i] != '{' || r.b[r.i+n-1] != '}' || d.summer.Sum(r.b[r.i:r.i+n]) != d.sums[d.k] {
		return FlowKey{}, false
	}
	// The same sum, so the same bytes: the same whole flow object, which
	// the reader would read the same way.
	d.refs = append(d.refs, FlowRef{Span: Span{int32(r.i), int32(r.i + n)}, Old: int32(d.k)})
	r.i += n
	d.k++
	return d.keys[d.k-1], true
}

// read reads the next flow, and passes the earlier flows whose keys come
// before its key, or are its key (a changed flow).
func (d *exportDiff) read(r *jreader) FlowKey {
	start := r.i
	f := new(Flow)
	r.flow(f, false)
	if !r.ok {
		return FlowKey{}
	}
	key := f.FlowKey
	key.IP = key.IP.Unmap()
	for d.k < len(d.keys) && d.keys[d.k].Compare(key) <= 0 {
		d.k++
	}
	d.refs = append(d.refs, FlowRef{Span: Span{int32(start), int32(r.i)}, Old: -1, Flow: f})
	return key
}
