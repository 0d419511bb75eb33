package store

import (
	"bytes"
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// A fast reader of the JSON this package writes for flows: the flow
// records of the store and the exports. That JSON has a small fixed
// vocabulary, and a reader of that vocabulary alone decodes it several
// times faster than encoding/json (a 100,000-flow export: 300 ms with
// encoding/json). It is only a fast path: at anything outside the
// vocabulary (an escape or a control character in a string, a field it
// does not know or that is spelt in another case, a null, a number that is
// not a plain non-negative integer, a value that does not parse) it gives
// up, and the caller decodes with encoding/json. So the result is always
// what encoding/json gives, errors included; FuzzFlowJSON checks it.

// jreader reads JSON from b at i; any surprise clears ok, and every method
// does nothing once ok is false.
type jreader struct {
	b  []byte
	i  int
	ok bool
	// intern, when set, holds the process and cgroup names read so far:
	// a million flows name a few processes and cgroups.
	intern map[string]string
	// spans, when set, gets where each flow flowList reads is in b.
	spans *[]Span
	// flowsOf, when set, reads an export's flows instead of flows.
	flowsOf func(r *jreader, e *Export)
	// rest, when set, gets the second half of flows read in halves
	// (flowsInHalves), which then stay out of the export's Flows.
	rest *[]Flow
}

// maxInterned bounds a reader's intern table.
const maxInterned = 4096

// name is string(b), the same string each time when interning.
func (r *jreader) name(b []byte) string {
	if r.intern == nil {
		return string(b)
	}
	if s, ok := r.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(r.intern) < maxInterned {
		r.intern[s] = s
	}
	return s
}

func (r *jreader) fail() bool { r.ok = false; return false }

func (r *jreader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// lit consumes c (after white space).
func (r *jreader) lit(c byte) bool {
	if !r.ok {
		return false
	}
	r.ws()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return r.fail()
}

// peek is the next byte after white space (0 at the end).
func (r *jreader) peek() byte {
	r.ws()
	if !r.ok || r.i >= len(r.b) {
		return 0
	}
	return r.b[r.i]
}

// str reads a string without escapes, of valid UTF-8, and returns its
// bytes (without the quotes, pointing into b).
func (r *jreader) str() []byte {
	if !r.lit('"') {
		return nil
	}
	n := bytes.IndexByte(r.b[r.i:], '"')
	if n < 0 {
		r.fail()
		return nil
	}
	s := r.b[r.i : r.i+n]
	ascii := true
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			r.fail()
			return nil
		}
		ascii = ascii && c < 0x80
	}
	if !ascii && !utf8.Valid(s) {
		r.fail() // encoding/json replaces invalid bytes
		return nil
	}
	r.i += n + 1
	return s
}

// quoted reads a string and returns it with its quotes (for
// time.Time.UnmarshalJSON).
func (r *jreader) quoted() []byte {
	if !r.ok {
		return nil
	}
	r.ws()
	start := r.i
	if r.str() == nil && !r.ok {
		return nil
	}
	return r.b[start:r.i]
}

// uint reads a non-negative integer of at most bits bits, as JSON writes
// it (no sign, no leading zero, no fraction or exponent).
func (r *jreader) uint(bits int) uint64 {
	if !r.ok {
		return 0
	}
	r.ws()
	start := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	digits := r.b[start:r.i]
	if len(digits) == 0 || (len(digits) > 1 && digits[0] == '0') || (r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E')) {
		r.fail()
		return 0
	}
	var v uint64
	for _, c := range digits { // strconv.ParseUint's answer, without a copy of digits
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			r.fail()
			return 0
		}
		v = v*10 + d
	}
	if bits < 64 && v >= 1<<bits {
		r.fail()
		return 0
	}
	return v
}

func (r *jreader) time(t *time.Time) {
	if q := r.quoted(); r.ok && t.UnmarshalJSON(q) != nil {
		r.fail()
	}
}

// strings reads an array of strings (an empty one is an empty slice, as
// encoding/json makes it).
func (r *jreader) strings(intern bool) []string {
	if !r.lit('[') {
		return nil
	}
	out := []string{}
	if r.peek() == ']' {
		r.i++
		return out
	}
	for r.ok {
		s := r.str()
		if intern {
			out = append(out, r.name(s))
		} else {
			out = append(out, string(s))
		}
		if r.peek() == ']' {
			r.i++
			return out
		}
		r.lit(',')
	}
	return nil
}

// object reads an object, calling field for each member with the reader
// at its value.
func (r *jreader) object(field func(name []byte)) {
	if !r.lit('{') {
		return
	}
	if r.peek() == '}' {
		r.i++
		return
	}
	for r.ok {
		name := r.str()
		r.lit(':')
		if !r.ok {
			return
		}
		field(name)
		if r.peek() == '}' {
			r.i++
			return
		}
		r.lit(',')
	}
}

// flow reads a flow object. In a stored record (record true) the key's
// fields are not in the value: encoding/json refuses them there.
func (r *jreader) flow(f *Flow, record bool) {
	r.object(func(name []byte) {
		switch string(name) {
		case "uid", "proto", "ip", "port":
			if record {
				r.fail()
				return
			}
			r.flowKey(name, &f.FlowKey)
		case "hits":
			f.Hits = r.uint(64)
		case "first_seen":
			r.time(&f.FirstSeen)
		case "last_seen":
			r.time(&f.LastSeen)
		case "hostnames":
			f.Hostnames = r.strings(false)
		case "processes":
			f.Processes = r.strings(true)
		case "comms":
			if f.Comms != nil {
				r.fail() // encoding/json decodes a second array into the first's elements
				return
			}
			f.Comms = r.comms()
		case "cgroups":
			f.Cgroups = r.strings(true)
		case "presented":
			f.Presented = r.strings(false)
		case "dropped":
			f.Dropped = r.uint(64)
		default:
			r.approval(name, &f.Approval)
		}
	})
}

// comms reads an array of {"exe":...,"comm":...} objects (an empty one
// is an empty slice, as encoding/json makes it).
func (r *jreader) comms() []ProcessComm {
	if !r.lit('[') {
		return nil
	}
	out := []ProcessComm{}
	if r.peek() == ']' {
		r.i++
		return out
	}
	for r.ok {
		var c ProcessComm
		r.object(func(name []byte) {
			switch string(name) {
			case "exe":
				c.Exe = r.name(r.str())
			case "comm":
				c.Comm = r.name(r.str())
			default:
				r.fail()
			}
		})
		out = append(out, c)
		if r.peek() == ']' {
			r.i++
			return out
		}
		r.lit(',')
	}
	return nil
}

func (r *jreader) flowKey(name []byte, k *FlowKey) {
	switch string(name) {
	case "uid":
		k.UID = uint32(r.uint(32))
	case "proto":
		k.Proto = uint8(r.uint(8))
	case "port":
		k.Port = uint16(r.uint(16))
	case "ip":
		if s := r.str(); r.ok && k.IP.UnmarshalText(s) != nil {
			r.fail()
		}
	}
}

func (r *jreader) approval(name []byte, a *Approval) {
	switch string(name) {
	case "approved":
		a.Approved = r.uint(64)
	case "approved_at":
		r.time(&a.ApprovedAt)
	case "approved_names":
		a.ApprovedNames = r.strings(false)
	case "retired":
		r.time(&a.Retired)
	default:
		r.fail()
	}
}

// end checks that nothing but white space follows.
func (r *jreader) end() bool {
	r.ws()
	return r.ok && r.i == len(r.b)
}

// decodeFlowRecord decodes a stored flow record into rec.
func decodeFlowRecord(k, v []byte, rec *flowRecord) error {
	*rec = flowRecord{}
	return decodeFlowInto(k, v, &rec.Flow, nil)
}

// decodeFlowInto decodes the stored flow record of key k into the zero
// flow f (without its key), with an intern table (jreader.intern; nil:
// none), without a copy of the flow.
func decodeFlowInto(k, v []byte, f *Flow, intern map[string]string) error {
	r := jreader{b: v, ok: true, intern: intern}
	r.flow(f, true)
	if r.end() {
		return nil
	}
	var rec flowRecord
	err := jsonUnmarshal(k, v, &rec)
	*f = rec.Flow
	return err
}

// DecodeExport decodes an export file ("egress-learn export") as
// encoding/json does, faster.
func DecodeExport(data []byte, e *Export) error {
	r := jreader{b: data, ok: true, intern: map[string]string{}}
	var out Export
	r.export(&out)
	if r.end() {
		*e = out
		return nil
	}
	return json.Unmarshal(data, e)
}

func (r *jreader) export(e *Export) {
	r.object(func(name []byte) {
		switch string(name) {
		case "format":
			e.Format = string(r.str())
		case "host":
			e.Host = string(r.str())
		case "exported":
			r.time(&e.Exported)
		case "users":
			r.users(e)
		case "flows":
			if r.flowsOf != nil {
				r.flowsOf(r, e)
			} else {
				r.flows(e)
			}
		default:
			r.fail()
		}
	})
}

func (r *jreader) users(e *Export) {
	if e.Users == nil {
		e.Users = map[uint32]string{}
	}
	r.object(func(name []byte) {
		uid, err := strconv.ParseUint(string(name), 10, 32)
		if err != nil {
			r.fail()
			return
		}
		e.Users[uint32(uid)] = string(r.str())
	})
}

func (r *jreader) flows(e *Export) {
	if !r.lit('[') {
		return
	}
	e.Flows = []Flow{}
	if r.peek() == ']' {
		r.i++
		return
	}
	if r.flowsInHalves(e) {
		return
	}
	if r.spans != nil {
		*r.spans = (*r.spans)[:0] // what a failed half recorded
	}
	// A flow takes about 250 bytes: size the slice once.
	e.Flows = make([]Flow, 0, (len(r.b)-r.i)/200+1)
	r.flowList(&e.Flows, false)
}

// flowList reads flows separated by commas up to the ']' that ends them
// (consumed); with atEnd, up to the end of b instead, where a flow must
// end.
func (r *jreader) flowList(flows *[]Flow, atEnd bool) {
	for r.ok {
		*flows = append(*flows, Flow{})
		r.ws()
		start := r.i
		r.flow(&(*flows)[len(*flows)-1], false)
		if r.spans != nil {
			*r.spans = append(*r.spans, Span{int32(start), int32(r.i)})
		}
		if atEnd && r.ok && r.i == len(r.b) {
			return
		}
		if r.peek() == ']' {
			if atEnd {
				r.fail()
				return
			}
			r.i++
			return
		}
		r.lit(',')
	}
}

// splitFlows is the size of the flows from which flowsInHalves reads them
// on two cores.
const splitFlows = 256 << 10

// flowsInHalves reads a large list of flows (from just after its '[') in
// two halves at once: the first up to a "},{" near the middle, the second
// after it. It is only a guess that the "},{" is between two flows (it
// may be inside a string): the first half must read as whole flows ending
// exactly at that '}'. Then the reader of the whole list would have read
// the same flows up to there, and found the second half's first flow after
// the ','. Else (or when the second half fails) it returns false, and the
// caller reads the list from the start, as without it.
func (r *jreader) flowsInHalves(e *Export) bool {
	start := r.i
	if len(r.b)-start < splitFlows {
		return false
	}
	mid := start + (len(r.b)-start)/2
	k := bytes.Index(r.b[mid:], []byte("},{"))
	if k < 0 {
		return false
	}
	cut := mid + k + 1 // the ',' after the guessed end of a flow
	second := jreader{b: r.b, i: cut + 1, ok: true}
	if r.intern != nil {
		second.intern = map[string]string{} // its own: the halves run at once
	}
	var restSpans []Span
	if r.spans != nil {
		second.spans = &restSpans
	}
	var rest []Flow
	var wg sync.WaitGroup
	wg.Go(func() {
		rest = make([]Flow, 0, (len(r.b)-cut)/200+1)
		second.flowList(&rest, false)
	})
	first := jreader{b: r.b[:cut], i: start, ok: true, intern: r.intern, spans: r.spans}
	// Room for both halves, unless the second stays apart (r.rest): the
	// first is not moved when the second is appended.
	room := len(r.b) - start
	if r.rest != nil {
		room = cut - start
	}
	flows := make([]Flow, 0, room/200+1)
	first.flowList(&flows, true)
	wg.Wait()
	if !first.ok || !second.ok {
		return false
	}
	if r.rest != nil {
		e.Flows, *r.rest = flows, rest
	} else {
		e.Flows = append(flows, rest...)
	}
	r.i = second.i
	if r.spans != nil {
		*r.spans = append(*r.spans, restSpans...)
	}
	return true
}

// Compile-time check that the addresses decode as encoding/json decodes
// them: through UnmarshalText.
var _ interface{ UnmarshalText([]byte) error } = (*netip.Addr)(nil)
