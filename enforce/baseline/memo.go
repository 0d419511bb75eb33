package baseline

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// An apply --from one export keeps a memo of it beside the store: the
// export's bytes, where each flow is in them, and the element each plain
// flow made (plan.Plainer). The next apply of an export reads only the
// flows whose bytes changed (store.DiffExport), takes the others'
// elements from the memo, and builds the plan of the rest
// (plan.BuildWith): the plan Build makes of the whole export, at a
// fraction of the work when a few flows changed. The memo is used only
// when it is whole (its checksum), of the generation the store says the
// table is, made with the same plan options and user names; else the
// export is read whole, and Reason says why.

const memoMagic = "egress-apply-memo/1\n"

// memoHeader is the magic, the generation, and the checksum of the rest.
const memoHeader = len(memoMagic) + 16

// ExportRead is one export read for a plan, with or without a memo.
type ExportRead struct {
	// Merged holds the export's flows, but for those whose elements are
	// in Plain: build with plan.BuildWith(Merged.Flows, Plain, ...).
	Merged *Merged
	Plain  plan.Plain
	Source string
	// Reason says why no memo was used ("" when one was); Reused counts
	// the flows whose elements came from it.
	Reason string
	Reused int

	fp    [32]byte
	data  []byte
	flows []memoFlow // the export's flows in its order, for the next memo
	// fromPlan: the plain flows' elements are to be found in the plan.
	fromPlan bool
}

// memoFlow is one flow of a memo.
type memoFlow struct {
	span  store.Span
	key   store.FlowKey
	plain bool
	// A plain flow's element (when hasElem; made when not fromPlan), and
	// its followed names.
	hasElem bool
	elem    plan.Element
	follow  []string
}

// ReadExportMemo reads the export at path for a plan of options o (o's
// Source and AllHosts are set to the export's), with the memo at
// memoPath when it is of generation gen.
func ReadExportMemo(path, memoPath string, gen uint64, o *plan.Options, warn func(string)) (*ExportRead, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read export: %w", err)
	}
	fp, err := optionsPrint(o)
	if err != nil {
		return nil, err
	}
	m, reason := loadMemo(memoPath, gen, fp, o.UserName)
	if m != nil {
		var r *ExportRead
		if r, reason, err = readAgainst(path, data, m, o, warn); r != nil || err != nil {
			if r != nil {
				r.fp = fp
			}
			return r, err
		}
	}
	r, err := readWhole(path, data, o, warn)
	if r != nil {
		r.fp, r.Reason = fp, reason
	}
	return r, err
}

// readWhole reads the export as ReadFleet does, noting where its flows
// are and which are plain.
func readWhole(path string, data []byte, o *plan.Options, warn func(string)) (*ExportRead, error) {
	var e store.Export
	spans, err := store.DecodeExportSpans(data, &e)
	if err != nil {
		return nil, fmt.Errorf("read export %s: not an egress baseline: %w", path, err)
	}
	if err := checkFormat(path, &e); err != nil {
		return nil, err
	}
	if err := checkExportHeader(&e); err != nil {
		return nil, fmt.Errorf("read export %s: %w", path, err)
	}
	r := &ExportRead{data: data, fromPlan: true}
	o.AllHosts = []string{e.Host}
	pl := plan.NewPlainer(*o)
	if spans != nil {
		r.flows = make([]memoFlow, len(e.Flows))
	}
	var warnings []string
	for i := range e.Flows {
		f, n := &e.Flows[i], len(warnings)
		if warnings, err = checkFlow(i, f, warnings); err != nil {
			return nil, fmt.Errorf("read export %s: %w", path, err)
		}
		if r.flows == nil {
			continue
		}
		mf := memoFlow{span: spans[i], key: f.FlowKey, plain: len(warnings) == n && kept(f) && pl.Is(f)}
		if mf.plain {
			mf.follow = pl.Followed(f)
			mf.hasElem = pl.HasElement(mf.follow)
		}
		r.flows[i] = mf
	}
	for _, w := range warnings {
		warn(path + ": " + w)
	}
	r.finish([]*store.Export{&e}, o, warn)
	return r, nil
}

// finish merges the exports into r.Merged as ReadFleet does.
func (r *ExportRead) finish(exports []*store.Export, o *plan.Options, warn func(string)) {
	r.Merged = merge(exports, true)
	for _, w := range r.Merged.Warnings {
		warn(w)
	}
	r.Source = fmt.Sprintf("1 exports (hosts %s)", exports[0].Host)
	o.Hosts, o.AllHosts, o.Source = r.Merged.Hosts, r.Merged.AllHosts, r.Source
}

// kept reports whether merge keeps f (it leaves retired flows out).
func kept(f *store.Flow) bool { return f.State(time.Time{}, 0) != store.StateRetired }

func checkFormat(path string, e *store.Export) error {
	if e.Format != store.ExportFormat {
		return fmt.Errorf("read export %s: format %q, want %q", path, e.Format, store.ExportFormat)
	}
	return nil
}

// readAgainst reads the export against memo m: nil and why when it
// cannot.
func readAgainst(path string, data []byte, m *memo, o *plan.Options, warn func(string)) (*ExportRead, string, error) {
	var e store.Export
	refs, ok := store.DiffExport(data, m.data, m.spans(), m.keys(), &e)
	if !ok {
		return nil, "the export is not in the form egress-learn writes (flows in key order, nothing to escape)", nil
	}
	if err := checkFormat(path, &e); err != nil {
		return nil, "", err
	}
	if err := checkExportHeader(&e); err != nil {
		return nil, "", fmt.Errorf("read export %s: %w", path, err)
	}
	o.AllHosts = []string{e.Host}
	pl := plan.NewPlainer(*o)
	r := &ExportRead{data: data, flows: make([]memoFlow, len(refs))}
	var warnings []string
	for i, ref := range refs {
		mf := &r.flows[i]
		mf.span = ref.Span
		if ref.Old >= 0 && m.flows[ref.Old].plain {
			old := &m.flows[ref.Old]
			mf.key, mf.plain, mf.hasElem, mf.elem, mf.follow = old.key, true, old.hasElem, old.elem, old.follow
			if mf.hasElem {
				mf.elem.Hosts, mf.elem.User = o.AllHosts, m.users[old.key.UID]
			}
			r.Reused++
			continue
		}
		f := ref.Flow
		if f == nil {
			f = new(store.Flow)
			if !store.DecodeFlowJSON(data[ref.Start:ref.End], f) {
				return nil, "a flow the fast reader does not read", nil
			}
		}
		n := len(warnings)
		var err error
		if warnings, err = checkFlow(i, f, warnings); err != nil {
			return nil, "", fmt.Errorf("read export %s: %w", path, err)
		}
		mf.key = f.FlowKey
		if mf.plain = len(warnings) == n && kept(f) && pl.Is(f); mf.plain {
			mf.follow = pl.Followed(f)
			if mf.hasElem = pl.HasElement(mf.follow); mf.hasElem {
				mf.elem = pl.Element(f)
			}
		}
		if !mf.plain {
			e.Flows = append(e.Flows, *f)
		}
	}
	for _, w := range warnings {
		warn(path + ": " + w)
	}
	for i := range r.flows {
		mf := &r.flows[i]
		if !mf.plain {
			continue
		}
		r.Plain.N++
		r.Plain.Rules = plan.Rules(r.Plain.Rules, mf.key, mf.follow)
		if mf.hasElem {
			if mf.key.IP.Is4() {
				r.Plain.V4 = append(r.Plain.V4, mf.elem)
			} else {
				r.Plain.V6 = append(r.Plain.V6, mf.elem)
			}
		}
	}
	r.finish([]*store.Export{&e}, o, warn)
	return r, "", nil
}

// optionsPrint is a digest of the plan options that make an element,
// but UserName (the memo keeps the names it gave), Now (plain flows do
// not depend on it), and the hosts and the source (one host's export:
// set from it).
func optionsPrint(o *plan.Options) ([32]byte, error) {
	type shown struct {
		plan.Options
		Now, UserName, Hosts, AllHosts, Source struct{} // hide those of Options
		Version                                int
	}
	b, err := json.Marshal(shown{Options: *o, Version: 1})
	if err != nil {
		return [32]byte{}, fmt.Errorf("the plan options: %w", err)
	}
	return sha256.Sum256(b), nil
}

// memo is a memo read back.
type memo struct {
	data  []byte // the export
	flows []memoFlow
	users map[uint32]string
}

func (m *memo) spans() []store.Span {
	out := make([]store.Span, len(m.flows))
	for i := range m.flows {
		out[i] = m.flows[i].span
	}
	return out
}

func (m *memo) keys() []store.FlowKey {
	out := make([]store.FlowKey, len(m.flows))
	for i := range m.flows {
		out[i] = m.flows[i].key
	}
	return out
}

// loadMemo reads the memo at path: nil and why when there is none to use.
func loadMemo(path string, gen uint64, fp [32]byte, userName func(uint32) string) (*memo, string) {
	if path == "" || gen == 0 {
		return nil, "no table was applied from an export before"
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "no memo of the export applied before"
	case err != nil:
		return nil, "the memo of the export applied before could not be read: " + err.Error()
	case len(b) < memoHeader || string(b[:len(memoMagic)]) != memoMagic:
		return nil, "the memo of the export applied before is not one"
	}
	body := b[memoHeader:]
	if xxhash.Sum64(body) != binary.BigEndian.Uint64(b[len(memoMagic)+8:]) {
		return nil, "the memo of the export applied before is damaged (checksum)"
	}
	if g := binary.BigEndian.Uint64(b[len(memoMagic):]); g != gen {
		return nil, "the memo is of generation " + strconv.FormatUint(g, 10) + ", the table is generation " + strconv.FormatUint(gen, 10)
	}
	m, mfp, err := decodeMemo(body)
	switch {
	case err != nil:
		return nil, "the memo of the export applied before: " + err.Error()
	case mfp != fp:
		return nil, "the plan options changed since the memo was made"
	}
	for uid, name := range m.users {
		if userName != nil && userName(uid) != name || userName == nil && name != "" {
			return nil, "the name of uid " + strconv.FormatUint(uint64(uid), 10) + " changed since the memo was made"
		}
	}
	return m, ""
}

// Memo is the memo of r for the plan p built from it, to write with
// WriteMemo once p is applied; nil when there can be none (the export's
// flows are not in key order, or a reader other than the fast one read
// them).
func (r *ExportRead) Memo(p *plan.Plan) []byte {
	if r.flows == nil {
		return nil
	}
	for i := 1; i < len(r.flows); i++ {
		if r.flows[i-1].key.Compare(r.flows[i].key) >= 0 {
			return nil
		}
	}
	if r.fromPlan && !r.elementsFrom(p) {
		return nil
	}
	return encodeMemo(r)
}

// elementsFrom finds the plain flows' elements in p's allow sets.
func (r *ExportRead) elementsFrom(p *plan.Plan) bool {
	if len(p.Sets) < 2 || p.Sets[0].Name != plan.SetAllow4 || p.Sets[1].Name != plan.SetAllow6 {
		return false
	}
	var at [2]int
	for i := range r.flows {
		mf := &r.flows[i]
		if !mf.hasElem {
			continue
		}
		s := 1
		if mf.key.IP.Is4() {
			s = 0
		}
		els := p.Sets[s].Elements
		for at[s] < len(els) && elementKey(&els[at[s]]).Compare(mf.key) < 0 {
			at[s]++
		}
		if at[s] == len(els) || elementKey(&els[at[s]]) != mf.key {
			return false
		}
		mf.elem = els[at[s]]
	}
	r.fromPlan = false
	return true
}

func elementKey(e *plan.Element) store.FlowKey {
	return store.FlowKey{UID: e.UID, IP: e.IP, Proto: e.Proto, Port: e.Port}
}

// encodeMemo writes the body of r's memo: the options' digest, the
// export, the user names, the flows.
func encodeMemo(r *ExportRead) []byte {
	users := map[uint32]string{}
	n := 32 + 8 + len(r.data) + 8 + len(r.flows)*48
	for i := range r.flows {
		if e := &r.flows[i].elem; r.flows[i].hasElem {
			users[e.UID] = e.User
			n += len(e.Comment) + 8
		}
		for _, f := range r.flows[i].follow {
			n += len(f) + 2
		}
	}
	b := make([]byte, 0, n)
	b = append(b, r.fp[:]...)
	b = appendBytes(b, r.data)
	b = binary.AppendUvarint(b, uint64(len(users)))
	for uid, name := range users {
		b = binary.BigEndian.AppendUint32(b, uid)
		b = appendBytes(b, []byte(name))
	}
	b = binary.AppendUvarint(b, uint64(len(r.flows)))
	for i := range r.flows {
		b = appendMemoFlow(b, &r.flows[i])
	}
	return b
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendMemoFlow appends one flow: span, key, plain, and a plain one's
// comment and checked names.
func appendMemoFlow(b []byte, f *memoFlow) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(f.span.Start))
	b = binary.BigEndian.AppendUint32(b, uint32(f.span.End))
	b = binary.BigEndian.AppendUint32(b, f.key.UID)
	b = appendBytes(b, f.key.IP.AsSlice())
	b = append(b, f.key.Proto)
	b = binary.BigEndian.AppendUint16(b, f.key.Port)
	switch {
	case !f.plain:
		return append(b, 0)
	case !f.hasElem:
		b = append(b, 1)
	default:
		b = append(b, 3)
		b = appendStrings(appendBytes(b, []byte(f.elem.Comment)), f.elem.Names)
	}
	return appendStrings(b, f.follow)
}

func appendStrings(b []byte, l []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(l)))
	for _, s := range l {
		b = appendBytes(b, []byte(s))
	}
	return b
}

// memoReader reads a memo's body; bad is set at the first short read.
type memoReader struct {
	b   []byte
	s   string // b as a string: the elements' strings point into it
	i   int
	bad bool
}

func (r *memoReader) next(n int) []byte {
	if r.bad || n < 0 || n > len(r.b)-r.i {
		r.bad = true
		return nil
	}
	r.i += n
	return r.b[r.i-n : r.i]
}

func (r *memoReader) uvarint() int {
	v, n := binary.Uvarint(r.b[min(r.i, len(r.b)):])
	if r.bad || n <= 0 || v > uint64(len(r.b)) {
		r.bad = true
		return 0
	}
	r.i += n
	return int(v)
}

func (r *memoReader) u32() uint32 {
	if b := r.next(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *memoReader) str() string {
	n := r.uvarint()
	if r.next(n) == nil {
		return ""
	}
	return r.s[r.i-n : r.i]
}

// decodeMemo reads what encodeMemo wrote.
func decodeMemo(body []byte) (*memo, [32]byte, error) {
	r := &memoReader{b: body, s: unsafe.String(unsafe.SliceData(body), len(body))}
	fp := [32]byte(append([]byte(nil), r.next(32)...))
	m := &memo{users: map[uint32]string{}}
	m.data = r.next(r.uvarint())
	for n := r.uvarint(); n > 0 && !r.bad; n-- {
		uid := r.u32()
		m.users[uid] = r.str()
	}
	n := r.uvarint()
	if n > len(body)/16 {
		r.bad = true
	}
	m.flows = make([]memoFlow, 0, n)
	for ; n > 0 && !r.bad; n-- {
		m.flows = append(m.flows, r.flow(m.users))
	}
	if r.bad || r.i != len(body) {
		return nil, fp, errors.New("its length")
	}
	return m, fp, nil
}

// flow reads one flow of a memo.
func (r *memoReader) flow(users map[uint32]string) memoFlow {
	var f memoFlow
	f.span = store.Span{Start: int32(r.u32()), End: int32(r.u32())}
	f.key.UID = r.u32()
	ip, ok := netip.AddrFromSlice(r.next(r.uvarint()))
	if b := r.next(3); b != nil && ok {
		f.key.IP, f.key.Proto, f.key.Port = ip, b[0], binary.BigEndian.Uint16(b[1:])
	} else {
		r.bad = true
	}
	b := r.next(1)
	if b == nil || b[0] == 0 {
		return f
	}
	f.plain, f.hasElem = true, b[0] == 3
	if f.hasElem {
		f.elem = plan.Element{UID: f.key.UID, IP: f.key.IP, Proto: f.key.Proto, Port: f.key.Port, Comment: r.str()}
		f.elem.Names = r.strings()
		if _, ok := users[f.key.UID]; !ok {
			r.bad = true
		}
	}
	f.follow = r.strings()
	return f
}

// strings reads what appendStrings wrote (none: nil).
func (r *memoReader) strings() []string {
	k := r.uvarint()
	if k == 0 {
		return nil
	}
	out := make([]string, 0, min(k, 64))
	for ; k > 0 && !r.bad; k-- {
		out = append(out, r.str())
	}
	return out
}

// WriteMemo writes memo body (ExportRead.Memo) of generation gen at path,
// replacing the one there; a nil body removes it.
func WriteMemo(path string, gen uint64, body []byte) error {
	if body == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	head := make([]byte, 0, memoHeader)
	head = append(head, memoMagic...)
	head = binary.BigEndian.AppendUint64(head, gen)
	head = binary.BigEndian.AppendUint64(head, xxhash.Sum64(body))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(head); err == nil {
		_, err = f.Write(body)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
