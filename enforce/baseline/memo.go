package baseline

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/phase"
	"github.com/egresskit/egress/store"
)

// An apply --from one export keeps a memo of it beside the store: the
// length and keyed sum (store.FlowSum, its key a secret of the memo,
// which is the owner's alone) of each flow's bytes, and the element each
// plain flow made (plan.Plainer). The next apply of an export reads only
// the flows whose bytes changed (store.DiffExport), takes the others'
// elements from the memo, and builds the plan of the rest
// (plan.BuildWith): the plan Build makes of the whole export, at a
// fraction of the work when a few flows changed. The memo is used only
// when it is whole (its checksum), of the generation the store says the
// table is, made with the same plan options and user names; else the
// export is read whole, and Reason says why.

// The memo's format: /3 ends its body with where its flows' second half
// and its rules start (memoFooter), so that they are decoded at once.
const memoMagic = "egress-apply-memo/3\n"

// memoMagicPrefix is the magic of every format of the memo.
const memoMagicPrefix = "egress-apply-memo/"

// memoFooter is the length of the end of a memo's body: how many flows
// its first half holds, where the second half's records start, and where
// the rules start (each a big-endian uint64, offsets in the body). The
// decoder trusts none of them: each part is decoded from its start and
// must end where the next starts, so an offset that is not the boundary
// a decoding in one go finds is refused.
const memoFooter = 24

// memoHeader is the magic, the generation, the checksum of the rest, and
// the key of the flows' sums (the flows' records follow it).
const memoHeader = len(memoMagic) + 16 + 32

// MemoBody is a memo to write (WriteMemo): the sums' key, and the read
// whose records it writes.
type MemoBody struct {
	key [32]byte
	r   *ExportRead
}

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
	key   [32]byte // of the flows' sums
	data  []byte
	flows []memoFlow      // the export's flows in its order, for the next memo (nil: none)
	read  []readFlow      // what the flows read (not taken from the memo) made
	sums  []store.FlowSum // of the bytes of the flows read, in read's order (a kept flow's is the memo's)
	// counts: how many plain flows give each of Plain.SortedRules
	counts []int32
	old    *memo // the memo read (readWhole: an empty one)
}

// memoFlow is one flow of the next memo (20 bytes: a read against the
// memo fills one a flow, most of them from the memo).
type memoFlow struct {
	span store.Span
	old  int32 // >= 0: the flow of the memo read whose record this is
	rd   int32 // else: what the flow read made, ExportRead.read[rd]
	// plain (plan.Plainer), with an element
	plain, hasElem bool
}

// readFlow is what a flow read (not taken from the memo) made: its key;
// when it is plain with an element, the element (in Plain:
// againstRead.elements); its followed names.
type readFlow struct {
	key    store.FlowKey
	elem   *plan.Element
	follow []string
}

// flowKey is the key of flow mf of r.
func (r *ExportRead) flowKey(mf *memoFlow) store.FlowKey {
	if mf.old >= 0 {
		return r.old.keys[mf.old]
	}
	return r.read[mf.rd].key
}

// ReadExportMemo reads the export at path for a plan of options o (o's
// Source and AllHosts are set to the export's), with the memo at
// memoPath when it is of generation gen.
func ReadExportMemo(path, memoPath string, gen uint64, o *plan.Options, warn func(string)) (*ExportRead, error) {
	return ReadExportMemoOf(path, memoPath, func() uint64 { return gen }, o, warn)
}

// ReadExportMemoOf is ReadExportMemo with the generation the table is
// asked for once the memo is read (gen may be slow: the export and the
// memo are read meanwhile, the export on a core of its own).
func ReadExportMemoOf(path, memoPath string, gen func() uint64, o *plan.Options, warn func(string)) (*ExportRead, error) {
	var data []byte
	var readErr error
	read := make(chan struct{})
	release := func() {}
	go func() {
		defer close(read)
		data, release, readErr = readExportFile(path)
		phase.Mark("read: export file read")
	}()
	fp, err := optionsPrint(o)
	var m *memo
	reason := ""
	if err == nil {
		m, reason = loadMemo(memoPath, gen, fp, o.UserName)
	}
	<-read
	// Nothing read keeps the export's bytes: its strings are copies.
	defer release()
	switch {
	case readErr != nil:
		return nil, fmt.Errorf("read export: %w", readErr)
	case err != nil:
		return nil, err
	}
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
// are, and reads each as readAgainst reads a changed flow (against a memo
// of none): the plain flows' elements and sorted, counted name rules are
// made once, for the plan and the next memo.
func readWhole(path string, data []byte, o *plan.Options, warn func(string)) (*ExportRead, error) {
	var e store.Export
	spans, rest, err := store.DecodeExportSpans(data, &e)
	if err != nil {
		return nil, fmt.Errorf("read export %s: not an egress baseline: %w", path, err)
	}
	if err := checkFormat(path, &e); err != nil {
		return nil, err
	}
	if err := checkExportHeader(&e); err != nil {
		return nil, fmt.Errorf("read export %s: %w", path, err)
	}
	o.AllHosts = []string{e.Host}
	if spans == nil || !keyOrder(e.Flows, rest) {
		e.Flows = append(e.Flows, rest...)
		return readPlain(path, &e, o, warn) // merge merges flows of one key
	}
	n := len(e.Flows) + len(rest)
	r := &ExportRead{data: data, flows: make([]memoFlow, n), read: make([]readFlow, 0, n), old: &memo{}}
	if _, err := rand.Read(r.key[:]); err != nil {
		return nil, fmt.Errorf("a key for the memo: %w", err)
	}
	halves := [2][]store.Flow{e.Flows, rest}
	e.Flows = make([]store.Flow, 0, n/8)
	a := againstRead{r: r, m: r.old, hosts: o.AllHosts, e: &e}
	if err := a.readFlows(halves, spans, o); err != nil {
		return nil, fmt.Errorf("read export %s: %w", path, err)
	}
	a.sortRules()
	for _, w := range a.warnings {
		warn(path + ": " + w)
	}
	r.finish([]*store.Export{&e}, o, warn)
	r.data = nil // the next memo keeps the flows' sums, not their bytes
	return r, nil
}

// keyOrder reports whether the keys of the flows, of the lists one after
// the other, are in strictly increasing order, with no IPv4-mapped
// address.
func keyOrder(lists ...[]store.Flow) bool {
	var prev *store.FlowKey
	for _, flows := range lists {
		for i := range flows {
			k := &flows[i].FlowKey
			if k.IP.Is4In6() || prev != nil && prev.Compare(*k) >= 0 {
				return false
			}
			prev = k
		}
	}
	return true
}

// readPlain reads export e whole, as ReadFleet does, for no memo.
func readPlain(path string, e *store.Export, o *plan.Options, warn func(string)) (*ExportRead, error) {
	warnings, err := checkFlows(e)
	if err != nil {
		return nil, fmt.Errorf("read export %s: %w", path, err)
	}
	for _, w := range warnings {
		warn(path + ": " + w)
	}
	r := &ExportRead{}
	r.finish([]*store.Export{e}, o, warn)
	return r, nil
}

// finish merges the exports into r.Merged as ReadFleet does.
func (r *ExportRead) finish(exports []*store.Export, o *plan.Options, warn func(string)) {
	r.Merged = merge(exports, true)
	for _, w := range r.Merged.Warnings {
		warn(w)
	}
	r.Source = fleetSource([]string{exports[0].Host})
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
	summer := store.NewFlowSummer(m.key)
	bufs := m.prefault()
	refs, ok := store.DiffExport(data, summer, m.lens, m.sums, m.keys, &e)
	phase.Mark("read: export diffed")
	pre := <-bufs
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
	r := &ExportRead{data: data, key: m.key, flows: sized(pre.flows, len(refs)), old: m}
	more := m.room(len(refs))
	r.Plain.V4, r.Plain.V6 = sized(pre.v4, m.v4+more)[:0], sized(pre.v6, m.v6+more)[:0]
	a := againstRead{r: r, m: m, pl: plan.NewPlainer(*o), hosts: o.AllHosts, e: &e, kept: make([]bool, len(m.keys)), summer: summer}
	for i, ref := range refs {
		if why, err := a.flow(i, ref); why != "" || err != nil {
			if err != nil {
				err = fmt.Errorf("read export %s: %w", path, err)
			}
			return nil, why, err
		}
	}
	phase.Mark("read: flows taken")
	if !a.sortRules() {
		return nil, "the memo's name rules are not those of its flows", nil
	}
	for _, w := range a.warnings {
		warn(path + ": " + w)
	}
	phase.Mark("read: rules sorted")
	r.finish([]*store.Export{&e}, o, warn)
	r.data = nil // the next memo keeps the flows' sums, not their bytes
	return r, "", nil
}

// room is how many elements more than m's plain flows had a read of an
// export of n flows makes room for: what changed, and some.
func (m *memo) room(n int) int { return n - len(m.keys) + n/100 + 16 }

// readBuffers are the slices a readAgainst fills, made ready (prefault).
type readBuffers struct {
	flows  []memoFlow
	v4, v6 []plan.Element
}

// prefault makes the slices a read against m fills for an export of
// about m's flows, in a goroutine of its own while the export is diffed
// (on one core), and writes a zero into each of their pages: the page
// faults of their fresh memory (about 25 MB at 100k flows, 6k faults)
// are taken on the other core, not in the loop that fills them.
func (m *memo) prefault() <-chan readBuffers {
	ch := make(chan readBuffers, 1)
	n := len(m.keys) + len(m.keys)/50 + 64 // room for some flows added
	more := m.room(n)
	go func() {
		b := readBuffers{flows: make([]memoFlow, n),
			v4: make([]plan.Element, m.v4+more), v6: make([]plan.Element, m.v6+more)}
		touch(b.flows)
		touch(b.v4)
		touch(b.v6)
		ch <- b
	}()
	return ch
}

// touch stores a zero value into s once a page.
func touch[T any](s []T) {
	var zero T
	step := max(1, 4096/int(unsafe.Sizeof(zero)))
	for i := 0; i < len(s); i += step {
		s[i] = zero
	}
}

// sized is s[:n] when it has room, else a new slice of n.
func sized[T any](s []T, n int) []T {
	if n <= cap(s) {
		return s[:n]
	}
	return make([]T, n)
}

// againstRead is the state of a readAgainst.
type againstRead struct {
	r        *ExportRead
	m        *memo
	pl       *plan.Plainer
	hosts    []string
	e        *store.Export // gets the flows that are not plain
	warnings []string
	kept     []bool            // the memo's flows kept
	summer   *store.FlowSummer // nil: the flows' sums are made apart
	added    []plan.NameRule   // the name rules of the plain flows read
	names    []string          // where the kept elements' names are cut from
	rdBase   int32             // added to the flows' indexes in r.read (readFlows' second half)
}

// flow takes the export's flow i: a plain flow of the memo as it was, any
// other read and checked.
func (a *againstRead) flow(i int, ref store.FlowRef) (string, error) {
	mf := &a.r.flows[i]
	mf.span, mf.old = ref.Span, -1
	if ref.Old < 0 {
		return a.read(i, ref)
	}
	plain, e, hasElem := a.m.element(int(ref.Old), &a.names) // its followed names' rules are in the memo's
	if !plain {
		return a.read(i, ref)
	}
	mf.old, mf.plain, mf.hasElem = ref.Old, true, hasElem
	if hasElem {
		e.Hosts, e.User = a.hosts, a.m.users[e.UID]
	}
	a.r.Reused++
	a.kept[ref.Old] = true
	a.plain(a.m.keys[ref.Old], hasElem, e)
	return "", nil
}

// read reads and checks the export's flow i.
func (a *againstRead) read(i int, ref store.FlowRef) (string, error) {
	mf := &a.r.flows[i]
	if a.summer != nil {
		a.r.sums = append(a.r.sums, a.summer.Sum(a.r.data[ref.Start:ref.End])) // read's order
	}
	f := ref.Flow
	if f == nil {
		f = new(store.Flow)
		if !store.DecodeFlowJSON(a.r.data[ref.Start:ref.End], f) {
			return "a flow the fast reader does not read", nil
		}
	}
	n := len(a.warnings)
	var err error
	if a.warnings, err = checkFlow(i, f, a.warnings); err != nil {
		return "", err
	}
	rd := len(a.r.read)
	a.r.read = append(a.r.read, readFlow{key: f.FlowKey})
	mf.rd = a.rdBase + int32(rd)
	rf := &a.r.read[rd]
	if mf.plain = len(a.warnings) == n && kept(f) && a.pl.Is(f); !mf.plain {
		a.e.Flows = append(a.e.Flows, *f)
		return "", nil
	}
	rf.follow = a.pl.Followed(f)
	var e plan.Element
	if mf.hasElem = a.pl.HasElement(rf.follow); mf.hasElem {
		e = a.pl.Element(f)
	}
	a.plain(rf.key, mf.hasElem, e)
	a.added = plan.Rules(a.added, rf.key, rf.follow)
	return "", nil
}

// plain adds what a plain flow adds to the plan.
func (a *againstRead) plain(k store.FlowKey, hasElem bool, e plan.Element) {
	p := &a.r.Plain
	p.N++
	switch {
	case !hasElem:
	case k.IP.Is4():
		p.V4 = append(p.V4, e)
	default:
		p.V6 = append(p.V6, e)
	}
}

// sortRules makes the sorted name rules of the plain flows: the memo's,
// without those of its plain flows not kept, with those of the plain
// flows read; false when the memo's rules are not those of its flows.
// The memo's rules between two changed ones are copied as they are.
func (a *againstRead) sortRules() bool {
	m := a.m
	var gone []plan.NameRule
	for k := range m.keys {
		if !a.kept[k] {
			if plain, follow := m.follow(k); plain {
				gone = plan.Rules(gone, m.keys[k], follow)
			}
		}
	}
	slices.SortFunc(gone, plan.CompareRules)
	plan.SortRules(a.added) // on two cores
	if len(m.rules) == 0 && len(gone) == 0 {
		a.countAdded() // a whole read: no memo's rules to merge
		return true
	}
	// In place, in m's arrays (read for this read alone): the rules gone
	// and the counts changed first (what is written is never ahead of
	// what is read), then the new rules put in from the end (a new array
	// only when they do not fit: 6.5 MB of fresh memory at 100k rules).
	rules, counts := m.rules, m.counts
	type insert struct {
		at   int // before the rule at in the compacted rules
		rule plan.NameRule
		n    int32
	}
	var inserts []insert
	w, at, g, j := 0, 0, 0, 0
	for g < len(gone) || j < len(a.added) {
		// The next changed rule, and the memo's rules before it as they are.
		next := a.nextChanged(gone, g, j)
		k := at + sort.Search(len(rules)-at, func(i int) bool { return plan.CompareRules(rules[at+i], next) >= 0 })
		copy(counts[w:], counts[at:k])
		w += copy(rules[w:], rules[at:k])
		at = k
		var n int32
		had := at < len(rules) && plan.CompareRules(rules[at], next) == 0
		if had {
			n = counts[at]
			at++
		}
		for ; g < len(gone) && plan.CompareRules(gone[g], next) == 0; g++ {
			n--
		}
		for ; j < len(a.added) && plan.CompareRules(a.added[j], next) == 0; j++ {
			n++
		}
		switch {
		case n < 0:
			return false // a rule of a flow of the memo that is not in its rules
		case n > 0 && had:
			rules[w], counts[w] = next, n
			w++
		case n > 0:
			inserts = append(inserts, insert{at: w, rule: next, n: n})
		}
	}
	copy(counts[w:], counts[at:])
	w += copy(rules[w:], rules[at:])
	size := w + len(inserts)
	if size > cap(rules) || size > cap(counts) {
		rules, counts = slices.Grow(rules[:w], len(inserts)), slices.Grow(counts[:w], len(inserts))
	}
	rules, counts = rules[:size], counts[:size]
	for i, end := len(inserts)-1, w; i >= 0; i-- {
		in := &inserts[i]
		copy(rules[in.at+i+1:], rules[in.at:end])
		copy(counts[in.at+i+1:], counts[in.at:end])
		rules[in.at+i], counts[in.at+i] = in.rule, in.n
		end = in.at
	}
	m.rules, m.counts = nil, nil // now the plan's
	a.setRules(rules, counts)
	return true
}

// nextChanged is the least of gone[g] and a.added[j] (those left).
func (a *againstRead) nextChanged(gone []plan.NameRule, g, j int) plan.NameRule {
	switch {
	case g == len(gone):
		return a.added[j]
	case j == len(a.added) || plan.CompareRules(gone[g], a.added[j]) <= 0:
		return gone[g]
	}
	return a.added[j]
}

// countAdded makes the sorted added rules, each once, the plain flows'
// sorted rules, and counts them (in place).
func (a *againstRead) countAdded() {
	rules, counts := a.added[:0], make([]int32, 0, len(a.added)/2)
	for _, rule := range a.added {
		if n := len(rules); n > 0 && plan.CompareRules(rules[n-1], rule) == 0 {
			counts[n-1]++
		} else {
			rules, counts = append(rules, rule), append(counts, 1)
		}
	}
	a.added = nil
	a.setRules(rules, counts)
}

// setRules makes rules, sorted and each once, the plain flows' sorted
// rules and counts[i] their counts, and points the plain flows read at
// their elements.
func (a *againstRead) setRules(rules []plan.NameRule, counts []int32) {
	p := &a.r.Plain
	p.RulesSorted, p.SortedRules, a.r.counts = true, rules, counts
	a.elements()
}

// elements points the plain flows read at their elements in the plan's
// (those of Plain, in flow order).
func (a *againstRead) elements() {
	p := &a.r.Plain
	var at [2]int
	for i := range a.r.flows {
		mf := &a.r.flows[i]
		if !mf.hasElem {
			continue
		}
		els, s := p.V6, 1
		if a.r.flowKey(mf).IP.Is4() {
			els, s = p.V4, 0
		}
		if mf.old < 0 && at[s] < len(els) {
			a.r.read[mf.rd].elem = &els[at[s]]
		}
		at[s]++
	}
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

// memo is a memo read back: the key of its sums, and each flow's length,
// sum, key, and record (all after its length and sum) in body.
type memo struct {
	body  []byte
	key   [32]byte
	lens  []int32
	sums  []store.FlowSum
	keys  []store.FlowKey
	recs  [][2]int32
	users map[uint32]string
	str   string // body as a string: the elements' strings point into it
	// How many elements of each family its plain flows have.
	v4, v6 int
	// The sorted name rules of its plain flows, and how many give each.
	rules  []plan.NameRule
	counts []int32
}

func (m *memo) reader(i int) memoReader {
	return memoReader{b: m.body[:m.recs[i][1]], s: m.str, i: int(m.recs[i][0])}
}

// element says whether flow i is plain, and a plain one's element (when
// hasElem); the element's names are cut from *slab.
func (m *memo) element(i int, slab *[]string) (plain bool, e plan.Element, hasElem bool) {
	r := m.reader(i)
	k := r.key()
	switch r.u8() {
	case 0:
		return false, e, false
	case 3:
		hasElem = true
		e = plan.Element{UID: k.UID, IP: k.IP, Proto: k.Proto, Port: k.Port, Comment: r.str(), Names: r.stringsIn(slab)}
	}
	return true, e, hasElem
}

// follow says whether flow i is plain, and a plain one's followed names.
func (m *memo) follow(i int) (plain bool, follow []string) {
	r := m.reader(i)
	r.key()
	switch r.u8() {
	case 0:
		return false, nil
	case 3:
		r.next(r.uvarint())
		r.skipStrings()
	}
	return true, r.strings()
}

// noTable is why no memo is used when no table was applied before.
const noTable = "no table was applied from an export before"

// loadMemo reads the memo at path: nil and why when there is none to use
// (gen() is the generation the table is: 0 for none; it is asked once the
// memo is read and decoded).
func loadMemo(path string, gen func() uint64, fp [32]byte, userName func(uint32) string) (*memo, string) {
	if path == "" {
		return nil, noTable
	}
	m, g, reason := readMemo(path, fp, userName)
	phase.Mark("read: memo decoded")
	switch n := gen(); {
	case n == 0:
		return nil, noTable
	case g != 0 && g != n:
		return nil, "the memo is of generation " + strconv.FormatUint(g, 10) + ", the table is generation " + strconv.FormatUint(n, 10)
	case reason != "":
		return nil, reason
	}
	return m, ""
}

// readMemo reads the memo at path, for plan options of digest fp and
// users named by userName: nil and why when it cannot be used, and its
// generation when its checksum is right (else 0).
func readMemo(path string, fp [32]byte, userName func(uint32) string) (*memo, uint64, string) {
	b, err := readMemoFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, 0, "no memo of the export applied before"
	case err != nil:
		return nil, 0, "the memo of the export applied before could not be read: " + err.Error()
	case len(b) >= memoHeader && string(b[:len(memoMagicPrefix)]) == memoMagicPrefix && string(b[:len(memoMagic)]) != memoMagic:
		return nil, 0, "the memo of the export applied before is of another format than " + memoMagic[:len(memoMagic)-1]
	case len(b) < memoHeader || string(b[:len(memoMagic)]) != memoMagic:
		return nil, 0, "the memo of the export applied before is not one"
	}
	body, key := b[memoHeader:], b[len(memoMagic)+16:memoHeader]
	// The checksum is made beside the decoding (which checks every
	// length it reads: a damaged memo is decoded to nothing, not past
	// its end), and checked before anything decoded is used.
	sum := make(chan uint64, 1)
	go func() { sum <- memoSum(key, body) }()
	m, mfp, renamed, err := decodeMemo(body, func(users map[uint32]string) string { return namesChanged(users, userName) })
	if <-sum != binary.BigEndian.Uint64(b[len(memoMagic)+8:]) {
		return nil, 0, "the memo of the export applied before is damaged (checksum)"
	}
	g := binary.BigEndian.Uint64(b[len(memoMagic):])
	switch {
	case err != nil:
		return nil, g, "the memo of the export applied before: " + err.Error()
	case mfp != fp:
		return nil, g, "the plan options changed since the memo was made"
	case renamed != "":
		return nil, g, renamed
	}
	m.key = [32]byte(key)
	return m, g, ""
}

// namesChanged says why the users' names are not those userName gives
// ("" when they are).
func namesChanged(users map[uint32]string, userName func(uint32) string) string {
	for uid, name := range users {
		if userName != nil && userName(uid) != name || userName == nil && name != "" {
			return "the name of uid " + strconv.FormatUint(uint64(uid), 10) + " changed since the memo was made"
		}
	}
	return ""
}

// Memo is the memo of r for the plan p built from it, to write with
// WriteMemo once p is applied; nil when there can be none (the export's
// flows are not in key order, or a reader other than the fast one read
// them).
func (r *ExportRead) Memo(p *plan.Plan) *MemoBody {
	if r.flows == nil {
		return nil
	}
	plain := false
	for i := range r.flows {
		if i > 0 && r.flowKey(&r.flows[i-1]).Compare(r.flowKey(&r.flows[i])) >= 0 {
			return nil
		}
		plain = plain || r.flows[i].plain
	}
	if !plain || len(r.counts) != len(r.Plain.SortedRules) || len(r.sums) != len(r.read) {
		return nil // nothing to keep
	}
	return &MemoBody{key: r.key, r: r}
}

// encodeMemo writes the records of r's memo: the options' digest, the
// user names, the flows (a flow of the memo read keeps its record), the
// rules, and the footer (memoFooter).
func encodeMemo(r *ExportRead, flush func([]byte) error) error {
	users := map[uint32]string{}
	if r.old != nil {
		maps.Copy(users, r.old.users)
	}
	for i := range r.flows {
		if mf := &r.flows[i]; mf.old < 0 && mf.hasElem {
			e := r.read[mf.rd].elem
			users[e.UID] = e.User
		}
	}
	// Written in chunks of about memoChunk: the memo's memory is bounded.
	b := make([]byte, 0, memoChunk+64<<10)
	flushed := 0 // the body's bytes flushed before b's
	more := func() error {
		if len(b) < memoChunk {
			return nil
		}
		err := flush(b)
		flushed += len(b)
		b = b[:0]
		return err
	}
	b = append(b, r.fp[:]...)
	b = binary.AppendUvarint(b, uint64(len(users)))
	for uid, name := range users {
		b = binary.BigEndian.AppendUint32(b, uid)
		b = appendBytes(b, []byte(name))
		if err := more(); err != nil {
			return err
		}
	}
	b = binary.AppendUvarint(b, uint64(len(r.flows)))
	half := len(r.flows) / 2
	var footer [memoFooter]byte
	binary.BigEndian.PutUint64(footer[:], uint64(half))
	for i := range r.flows {
		if i == half {
			binary.BigEndian.PutUint64(footer[8:], uint64(flushed+len(b)))
		}
		mf := &r.flows[i]
		b = binary.BigEndian.AppendUint32(b, uint32(mf.span.End-mf.span.Start))
		if mf.old >= 0 {
			b = append(b, r.old.sums[mf.old][:]...)
		} else {
			b = append(b, r.sums[mf.rd][:]...)
		}
		if mf.old >= 0 {
			rec := r.old.recs[mf.old]
			b = append(b, r.old.body[rec[0]:rec[1]]...)
		} else {
			b = appendMemoFlow(b, mf, &r.read[mf.rd])
		}
		if err := more(); err != nil {
			return err
		}
	}
	if half == len(r.flows) { // no flows
		binary.BigEndian.PutUint64(footer[8:], uint64(flushed+len(b)))
	}
	binary.BigEndian.PutUint64(footer[16:], uint64(flushed+len(b)))
	rules, counts := r.Plain.SortedRules, r.counts
	b = binary.AppendUvarint(b, uint64(len(rules)))
	for i := range rules {
		b = appendRule(b, &rules[i], counts[i])
		if err := more(); err != nil {
			return err
		}
	}
	return flush(append(b, footer[:]...))
}

// memoChunk is the size of the chunks a memo is written in.
var memoChunk = 1 << 20

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendMemoFlow appends one flow's record: key, plain, and a plain one's
// element's comment and checked names, and its followed names.
func appendMemoFlow(b []byte, f *memoFlow, rf *readFlow) []byte {
	b = binary.BigEndian.AppendUint32(b, rf.key.UID)
	b = appendBytes(b, rf.key.IP.AsSlice())
	b = append(b, rf.key.Proto)
	b = binary.BigEndian.AppendUint16(b, rf.key.Port)
	switch {
	case !f.plain:
		return append(b, 0)
	case !f.hasElem:
		b = append(b, 1)
	default:
		b = append(b, 3)
		b = appendStrings(appendBytes(b, []byte(rf.elem.Comment)), rf.elem.Names)
	}
	return appendStrings(b, rf.follow)
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
	if r.bad || r.i >= len(r.b) {
		r.bad = true
		return 0
	}
	v, n := binary.Uvarint(r.b[r.i:])
	if n <= 0 || v > uint64(len(r.b)) {
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

func (r *memoReader) u8() byte {
	if b := r.next(1); b != nil {
		return b[0]
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

// stringsIn is strings, cut from *slab (grown in blocks): no allocation
// a flow.
func (r *memoReader) stringsIn(slab *[]string) []string {
	k := r.uvarint()
	if k == 0 || r.bad {
		return nil
	}
	if k > len(r.b)-r.i {
		r.bad = true
		return nil
	}
	if cap(*slab)-len(*slab) < k {
		*slab = make([]string, 0, max(k, 4096))
	}
	at := len(*slab)
	for ; k > 0 && !r.bad; k-- {
		*slab = append(*slab, r.str())
	}
	return (*slab)[at:len(*slab):len(*slab)]
}

// skipStrings passes what appendStrings wrote.
func (r *memoReader) skipStrings() {
	for k := r.uvarint(); k > 0 && !r.bad; k-- {
		r.next(r.uvarint())
	}
}

// key reads a flow's key.
func (r *memoReader) key() store.FlowKey {
	var k store.FlowKey
	k.UID = r.u32()
	ip, ok := netip.AddrFromSlice(r.next(r.uvarint()))
	if b := r.next(3); b != nil && ok {
		k.IP, k.Proto, k.Port = ip, b[0], binary.BigEndian.Uint16(b[1:])
	} else {
		r.bad = true
	}
	return k
}

// decodeMemo reads what encodeMemo wrote, on both cores: the flows'
// two halves and the rules at once (memoFooter says where each starts;
// each must end where the next starts, and the key order holds across
// the halves), while named checks the memo's users (what it returns is
// renamed) on a goroutine of its own: naming a user can take a while
// (os/user's lookup, NSS's modules walked for a UID no file names, ~6 ms
// for applybench's 40 users in a fresh process), and the users come
// first in the memo. named is the only caller of what it calls until
// decodeMemo returns.
func decodeMemo(body []byte, named func(map[uint32]string) string) (m *memo, fp [32]byte, renamed string, err error) {
	if len(body) < 32+memoFooter {
		return nil, fp, "", errors.New("its length")
	}
	foot := body[len(body)-memoFooter:]
	half, at2, atRules := binary.BigEndian.Uint64(foot), binary.BigEndian.Uint64(foot[8:]), binary.BigEndian.Uint64(foot[16:])
	body = body[:len(body)-memoFooter]
	r := &memoReader{b: body, s: unsafe.String(unsafe.SliceData(body), len(body))}
	fp = [32]byte(append([]byte(nil), r.next(32)...))
	m = &memo{body: body, str: r.s, users: map[uint32]string{}}
	for n := r.uvarint(); n > 0 && !r.bad; n-- {
		uid := r.u32()
		m.users[uid] = r.str()
	}
	n := r.uvarint()
	if r.bad || n > len(body)/16 {
		return nil, fp, "", errors.New("its length")
	}
	if half > uint64(n) || at2 < uint64(r.i) || at2 > atRules || atRules > uint64(len(body)) {
		return nil, fp, "", errors.New("where its parts start")
	}
	// The users are only read from here on (and m, a result, is set by
	// a return: the goroutine is given the map itself).
	names := make(chan string, 1)
	go func(users map[uint32]string) { names <- named(users) }(m.users)
	defer func() { renamed = <-names }()
	h := int(half)
	m.lens, m.sums, m.keys, m.recs = make([]int32, n), make([]store.FlowSum, n), make([]store.FlowKey, n), make([][2]int32, n)
	first := &memoReader{b: body[:at2], s: r.s, i: r.i}
	second := &memoReader{b: body[:atRules], s: r.s, i: int(at2)}
	rules := &memoReader{b: body, s: r.s, i: int(atRules)}
	var n1, n2 [2]int
	var wg sync.WaitGroup
	wg.Go(func() { m.rules, m.counts = rules.rules() })
	wg.Go(func() { n2 = second.flows(m, h, n) })
	n1 = first.flows(m, 0, h)
	wg.Wait()
	switch {
	case first.bad || second.bad || rules.bad || rules.i != len(body):
		// A part that does not end where the next starts (the flows'
		// readers end at their ends: flows).
		return nil, fp, "", errors.New("its length")
	case h > 0 && h < n && m.keys[h-1].Compare(m.keys[h]) >= 0:
		return nil, fp, "", errors.New("its flows' order")
	}
	m.v4, m.v6 = n1[0]+n2[0], n1[1]+n2[1]
	return m, fp, "", nil
}

// flows reads the records of m's flows from to to (and checks their
// keys' order), from r's place to the end of r.b: bad when they do not
// end there. It gives how many elements of each family (IPv4, IPv6) the
// flows' plain ones have.
func (r *memoReader) flows(m *memo, from, to int) (elems [2]int) {
	for i := from; i < to && !r.bad; i++ {
		m.lens[i] = int32(r.u32())
		if sum := r.next(len(store.FlowSum{})); sum != nil {
			m.sums[i] = store.FlowSum(sum)
		}
		start := r.i
		m.keys[i] = r.key()
		if r.skipFlow(m.users, m.keys[i], &elems); !r.bad {
			m.recs[i] = [2]int32{int32(start), int32(r.i)}
			r.bad = i > from && m.keys[i-1].Compare(m.keys[i]) >= 0
		}
	}
	if r.i != len(r.b) {
		r.bad = true
	}
	return elems
}

// rules reads the sorted, counted name rules of the plain flows.
func (r *memoReader) rules() ([]plan.NameRule, []int32) {
	n := r.uvarint()
	if n > len(r.b)/8 {
		r.bad = true
		return nil, nil
	}
	// Room for the rules a read adds (sortRules merges in place).
	room := n + n/64 + 64
	rules, counts := make([]plan.NameRule, n, room), make([]int32, n, room)
	for i := 0; i < n && !r.bad; i++ {
		rule := &rules[i]
		rule.UID = r.u32()
		rule.Name = r.str()
		if b := r.next(3); b != nil {
			rule.Proto, rule.Port = b[0], binary.BigEndian.Uint16(b[1:])
		}
		rule.Source = "learned"
		count := r.uvarint()
		counts[i] = int32(count)
		if count == 0 || count > math.MaxInt32 || i > 0 && plan.CompareRules(rules[i-1], *rule) >= 0 {
			r.bad = true
		}
	}
	return rules, counts
}

// appendRule appends a sorted, counted name rule.
func appendRule(b []byte, rule *plan.NameRule, count int32) []byte {
	b = binary.BigEndian.AppendUint32(b, rule.UID)
	b = appendBytes(b, []byte(rule.Name))
	b = append(b, rule.Proto)
	b = binary.BigEndian.AppendUint16(b, rule.Port)
	return binary.AppendUvarint(b, uint64(count))
}

// skipFlow passes the rest of the record of flow k after its key, and
// counts its element in elems (IPv4, IPv6); a plain flow's element of a
// user the memo does not name (users) is bad.
func (r *memoReader) skipFlow(users map[uint32]string, k store.FlowKey, elems *[2]int) {
	switch r.u8() {
	case 0:
		return
	case 1:
	case 3:
		if _, ok := users[k.UID]; !ok {
			r.bad = true
			return
		}
		if k.IP.Is4() {
			elems[0]++
		} else {
			elems[1]++
		}
		r.next(r.uvarint())
		r.skipStrings()
	default:
		r.bad = true
		return
	}
	r.skipStrings()
}

// WriteMemo writes memo body (ExportRead.Memo) of generation gen at path,
// replacing the one there; a nil body removes it.
func WriteMemo(path string, gen uint64, body *MemoBody) error {
	pm, err := StartMemo(path, body)
	if err != nil {
		return err
	}
	return pm.Commit(gen)
}

// PendingMemo is a memo written beside the one it replaces, until Commit
// names its generation and puts it in place.
type PendingMemo struct {
	path string
	f    *os.File // nil: there is none (Commit removes the old one)
}

// StartMemo writes memo body beside path (nil body: nothing), for Commit.
func StartMemo(path string, body *MemoBody) (*PendingMemo, error) {
	if body == nil {
		return &PendingMemo{path: path}, nil
	}
	head := make([]byte, 0, memoHeader)
	head = append(head, memoMagic...)
	head = binary.BigEndian.AppendUint64(head, 0) // the generation: Commit's
	head = binary.BigEndian.AppendUint64(head, 0) // the checksum: below
	head = append(head, body.key[:]...)
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return nil, err
	}
	sum := xxhash.New()
	sum.Write(body.key[:])
	_, err = f.Write(head)
	if err == nil {
		err = encodeMemo(body.r, func(b []byte) error {
			sum.Write(b)
			_, err := f.Write(b)
			return err
		})
	}
	if err == nil {
		_, err = f.WriteAt(binary.BigEndian.AppendUint64(nil, sum.Sum64()), int64(len(memoMagic)+8))
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &PendingMemo{path: path, f: f}, nil
}

// Commit makes the memo generation gen's, in place of the one at its path.
func (pm *PendingMemo) Commit(gen uint64) error {
	if pm.f == nil {
		if err := os.Remove(pm.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	_, err := pm.f.WriteAt(binary.BigEndian.AppendUint64(nil, gen), int64(len(memoMagic)))
	if cerr := pm.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(pm.f.Name(), pm.path)
	}
	if err != nil {
		os.Remove(pm.f.Name())
	}
	return err
}

// Abort removes the memo written (the one in place stays).
func (pm *PendingMemo) Abort() {
	if pm.f != nil {
		pm.f.Close()
		os.Remove(pm.f.Name())
	}
}

// memoSum is the checksum of a memo's key and records.
func memoSum(key, rec []byte) uint64 {
	sum := xxhash.New()
	sum.Write(key)
	sum.Write(rec)
	return sum.Sum64()
}
