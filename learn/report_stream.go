package learn

import (
	"bufio"
	"encoding/json"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// The report of a million flows (issue 15) is written as it is made: the
// flows are not copied into rows first. Their order is a sorted array of
// compact keys; chunks of rows are formatted on every CPU and written in
// order. The table's columns are aligned as text/tabwriter aligns them,
// without its per-cell bookkeeping: a plain line (a user's first line, the
// blank line between users) ends the column block, so each user's table
// is aligned on its own; a "presented:" line under a row is written as it
// is, inside the block (WriteReportTable puts it back under its row). No
// cell holds a byte tabwriter treats specially (textsafe.Append).

// reportChunk is the number of rows formatted as one piece of work.
const reportChunk = 2048

// sortKey orders a flow as FlowKey.Compare does (UID, then the address
// with IPv4 first, protocol and port), with its index last: the order of
// a stable sort.
type sortKey struct {
	uid       uint64 // UID << 1 | 1 for IPv6
	hi, lo    uint64 // the address as 16 bytes
	protoPort uint32
	idx       int32
}

func compareSortKey(a, b sortKey) int {
	switch {
	case a.uid != b.uid:
		return cmpU64(a.uid, b.uid)
	case a.hi != b.hi:
		return cmpU64(a.hi, b.hi)
	case a.lo != b.lo:
		return cmpU64(a.lo, b.lo)
	case a.protoPort != b.protoPort:
		return cmpU64(uint64(a.protoPort), uint64(b.protoPort))
	}
	return int(a.idx) - int(b.idx)
}

func cmpU64(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

// reportOrder is the indexes of the flows the report shows, in its order.
func reportOrder(flows []store.Flow, o *ReportOptions) []int32 {
	keys := make([]sortKey, 0, len(flows))
	for i := range flows {
		k := &flows[i].FlowKey
		if o.UID != nil && k.UID != *o.UID {
			continue
		}
		a := k.IP.As16()
		v6 := uint64(0)
		if k.IP.BitLen() == 128 {
			v6 = 1
		}
		keys = append(keys, sortKey{uid: uint64(k.UID)<<1 | v6, hi: be64(a[:8]), lo: be64(a[8:]),
			protoPort: uint32(k.Proto)<<16 | uint32(k.Port), idx: int32(i)})
	}
	if !slices.IsSortedFunc(keys, compareSortKey) {
		slices.SortFunc(keys, compareSortKey)
	}
	order := make([]int32, len(keys))
	for i, k := range keys {
		order[i] = k.idx
	}
	return order
}

func be64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// concurrent makes o safe for the workers: the user names of the flows
// in order are looked up first, and the services of cgroups are looked up
// one at a time and remembered.
func (o *ReportOptions) concurrent(flows []store.Flow, order []int32) {
	if o.UserName != nil {
		names := map[uint32]string{}
		for _, i := range order {
			uid := flows[i].UID
			if _, ok := names[uid]; !ok {
				names[uid] = o.UserName(uid)
			}
		}
		o.UserName = func(uid uint32) string { return names[uid] }
	}
	if service := o.Service; service != nil {
		var mu sync.Mutex
		seen := map[string]string{}
		o.Service = func(c string) string {
			mu.Lock()
			defer mu.Unlock()
			s, ok := seen[c]
			if !ok {
				s = service(c)
				seen[c] = s
			}
			return s
		}
	}
}

// reportRow is one flow as a report row.
func reportRow(f *store.Flow, o *ReportOptions) ReportFlow {
	name := strconv.FormatUint(uint64(f.UID), 10)
	if o.UserName != nil {
		name = o.UserName(f.UID)
	}
	comms := f.Comms
	if comms == nil {
		comms = []store.ProcessComm{}
	}
	return ReportFlow{
		UID:       f.UID,
		User:      name,
		Proto:     ProtoName(f.Proto),
		IP:        f.IP.String(),
		Port:      f.Port,
		Hostnames: nonNil(f.Hostnames),
		Hits:      f.Hits,
		FirstSeen: f.FirstSeen.UTC().Truncate(time.Second),
		LastSeen:  f.LastSeen.UTC().Truncate(time.Second),
		Processes: nonNil(f.Processes),
		Comms:     comms,
		Cgroups:   nonNil(f.Cgroups),
		Services:  o.services(f.Cgroups),
		Presented: f.Presented,
		Fronted:   f.Fronted(),
		State:     f.State(o.Now, o.StaleAfter),
		Approved:  f.Approved,
	}
}

// chunkOut is what a worker made of a chunk: text and where its lines end.
type chunkOut struct {
	buf   []byte
	lines []reportLine
}

// reportLine is one line of a chunk: buf[start:end], with the widths of
// its cells when it is a table row.
type reportLine struct {
	start, end int
	kind       lineKind
	widths     [reportCells - 1]int32
}

type lineKind uint8

const (
	lineRow   lineKind = iota // a table row
	linePlain                 // no tab: ends the column block
	lineNote                  // under a row, no tab: written as it is, in the block
)

const reportCells = 9

// pipeline formats n chunks with format on every CPU and hands them to
// write in order; at most a few chunks wait.
func pipeline(n int, format func(i int) *chunkOut, write func(*chunkOut) error) error {
	workers := max(1, runtime.GOMAXPROCS(0))
	results := make(chan chan *chunkOut, 2*workers)
	sem := make(chan struct{}, workers)
	stop := make(chan struct{})
	go func() {
		defer close(results)
		for i := range n {
			select {
			case sem <- struct{}{}:
			case <-stop:
				return
			}
			c := make(chan *chunkOut, 1)
			go func() {
				defer func() { <-sem }()
				c <- format(i)
			}()
			select {
			case results <- c:
			case <-stop:
				return
			}
		}
	}()
	var err error
	for c := range results {
		out := <-c
		if err == nil {
			if err = write(out); err != nil {
				close(stop)
			}
		}
	}
	return err
}

// WriteReportFlowsJSON writes flows as BuildReport's rows in JSON (the bytes
// of WriteReportJSON), one chunk of rows at a time.
func WriteReportFlowsJSON(out io.Writer, flows []store.Flow, o ReportOptions) error {
	order := reportOrder(flows, &o)
	o.concurrent(flows, order)
	if len(order) == 0 {
		_, err := io.WriteString(out, "[]\n")
		return err
	}
	w := bufio.NewWriterSize(out, 256<<10)
	w.WriteString("[\n")
	chunks := (len(order) + reportChunk - 1) / reportChunk
	err := pipeline(chunks, func(c int) *chunkOut {
		var buf []byte
		for i := c * reportChunk; i < min(len(order), (c+1)*reportChunk); i++ {
			if i > 0 {
				buf = append(buf, ",\n"...)
			}
			row := reportRow(&flows[order[i]], &o)
			if fast, ok := appendRowJSON(buf, &row); ok {
				buf = fast
				continue
			}
			data, err := json.MarshalIndent(row, "  ", "  ")
			if err != nil {
				return &chunkOut{buf: []byte("\x00" + err.Error())}
			}
			buf = append(append(buf, "  "...), data...)
		}
		return &chunkOut{buf: buf}
	}, func(c *chunkOut) error {
		if len(c.buf) > 0 && c.buf[0] == 0 {
			return &json.UnsupportedValueError{Str: string(c.buf[1:])}
		}
		_, err := w.Write(c.buf)
		return err
	})
	if err != nil {
		return err
	}
	w.WriteString("\n]\n")
	return w.Flush()
}

// WriteReport writes the report of flows as WriteReportTable writes
// BuildReport's rows, without making the rows.
func WriteReport(out io.Writer, flows []store.Flow, o ReportOptions, runs []store.Run, conv []store.Convergence, now time.Time) error {
	order := reportOrder(flows, &o)
	o.concurrent(flows, order)
	w := bufio.NewWriterSize(out, 256<<10)
	if len(order) == 0 {
		w.WriteString(noFlows)
	}
	// The chunks: runs of rows of one user each.
	type span struct{ from, to int }
	var spans []span
	for i := 0; i < len(order); {
		j := i
		uid := flows[order[i]].UID
		for j < len(order) && flows[order[j]].UID == uid {
			j++
		}
		for k := i; k < j; k += reportChunk {
			spans = append(spans, span{k, min(j, k+reportChunk)})
		}
		i = j
	}
	a := &aligner{w: w}
	err := pipeline(len(spans), func(c int) *chunkOut {
		s := spans[c]
		f := &rowFormatter{o: &o, flows: flows, times: map[int64]string{}, services: map[string]string{}}
		if s.from == 0 || flows[order[s.from-1]].UID != flows[order[s.from]].UID {
			n := s.from
			for n < len(order) && flows[order[n]].UID == flows[order[s.from]].UID {
				n++
			}
			f.header(s.from > 0, flows[order[s.from]].UID, n-s.from)
		}
		for _, i := range order[s.from:s.to] {
			f.row(&flows[i])
		}
		return &f.out
	}, a.chunk)
	if err != nil {
		return err
	}
	if err := a.flush(); err != nil {
		return err
	}
	writeReportTrailer(w, runs, conv, now)
	return w.Flush()
}

// rowFormatter formats rows into a chunk, as writeReportTable would have
// given them to its tabwriter.
type rowFormatter struct {
	o        *ReportOptions
	flows    []store.Flow
	out      chunkOut
	cells    [reportCells]int // where the cells of the current line start
	ncell    int
	note     bool
	times    map[int64]string  // formatted times by second
	services map[string]string // service by cgroup
	svcs     []string
}

func (f *rowFormatter) str(s string) {
	f.out.buf = textsafe.Append(f.out.buf, s)
}

func (f *rowFormatter) tab() {
	f.out.buf = append(f.out.buf, '\t')
	f.ncell++
	f.cells[f.ncell] = len(f.out.buf)
}

func (f *rowFormatter) begin() {
	f.ncell, f.note = 0, false
	f.cells[0] = len(f.out.buf)
}

// end ends the line begun last: a row (cells), a note, or a plain line.
func (f *rowFormatter) end() {
	f.out.buf = append(f.out.buf, '\n')
	l := reportLine{start: f.cells[0], end: len(f.out.buf), kind: lineRow}
	switch {
	case f.note:
		l.kind = lineNote
	case f.ncell == 0:
		l.kind = linePlain
	default:
		for c := range reportCells - 1 {
			l.widths[c] = int32(utf8.RuneCount(f.out.buf[f.cells[c] : f.cells[c+1]-1]))
		}
	}
	f.out.lines = append(f.out.lines, l)
}

func (f *rowFormatter) header(blank bool, uid uint32, n int) {
	if blank {
		f.begin()
		f.end()
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if f.o.UserName != nil {
		name = f.o.UserName(uid)
	}
	f.begin()
	f.out.buf = append(f.out.buf, "user "...)
	f.str(name)
	f.out.buf = append(f.out.buf, " (uid "...)
	f.out.buf = strconv.AppendUint(f.out.buf, uint64(uid), 10)
	f.out.buf = append(f.out.buf, "): "...)
	f.out.buf = strconv.AppendInt(f.out.buf, int64(n), 10)
	f.out.buf = append(f.out.buf, " flow(s)"...)
	f.end()
	f.begin()
	for i, h := range []string{"  DESTINATION", "HOSTNAMES", "PROTO/PORT", "HITS", "FIRST SEEN", "LAST SEEN", "PROCESSES", "SERVICES", "STATE"} {
		if i > 0 {
			f.tab()
		}
		f.out.buf = append(f.out.buf, h...)
	}
	f.end()
}

// list appends s joined by sep, or "-" when that is empty (orDash).
func (f *rowFormatter) list(s []string, sep string, orDash bool) {
	start := len(f.out.buf)
	for i, x := range s {
		if i > 0 {
			f.out.buf = append(f.out.buf, sep...)
		}
		f.str(x)
	}
	if orDash && len(f.out.buf) == start {
		f.out.buf = append(f.out.buf, '-')
	}
}

func (f *rowFormatter) time(t time.Time) {
	t = t.UTC().Truncate(time.Second)
	s, ok := f.times[t.Unix()]
	if !ok {
		s = t.Local().Format(time.DateTime)
		f.times[t.Unix()] = s
	}
	f.out.buf = append(f.out.buf, s...)
}

// processes appends store.ProcessNames(processes, comms) joined by ", ".
func (f *rowFormatter) processes(processes []string, comms []store.ProcessComm) {
	for i, p := range processes {
		if i > 0 {
			f.out.buf = append(f.out.buf, ", "...)
		}
		f.str(p)
		own := 0
		for _, c := range comms {
			if c.Exe != p {
				continue
			}
			if own == 0 {
				f.out.buf = append(f.out.buf, " ("...)
			} else {
				f.out.buf = append(f.out.buf, ", "...)
			}
			f.str(c.Comm)
			own++
		}
		if own > 0 {
			f.out.buf = append(f.out.buf, ')')
		}
	}
}

// services appends the flow's services (ReportOptions.services) joined.
func (f *rowFormatter) servicesOf(cgroups []string) {
	f.svcs = f.svcs[:0]
	if f.o.Service != nil {
		for _, c := range cgroups {
			s, ok := f.services[c]
			if !ok {
				s = f.o.Service(c)
				f.services[c] = s
			}
			if s != "" && !slices.Contains(f.svcs, s) {
				f.svcs = append(f.svcs, s)
			}
		}
		slices.Sort(f.svcs)
	}
	f.list(f.svcs, ",", true)
}

func (f *rowFormatter) row(fl *store.Flow) {
	f.begin()
	f.out.buf = append(f.out.buf, "  "...)
	f.out.buf = fl.IP.AppendTo(f.out.buf)
	f.tab()
	f.list(fl.Hostnames, ",", true)
	f.tab()
	f.out.buf = append(f.out.buf, ProtoName(fl.Proto)...)
	f.out.buf = append(f.out.buf, '/')
	f.out.buf = strconv.AppendUint(f.out.buf, uint64(fl.Port), 10)
	f.tab()
	f.out.buf = strconv.AppendUint(f.out.buf, fl.Hits, 10)
	f.tab()
	f.time(fl.FirstSeen)
	f.tab()
	f.time(fl.LastSeen)
	f.tab()
	f.processes(fl.Processes, fl.Comms)
	f.tab()
	f.servicesOf(fl.Cgroups)
	f.tab()
	f.out.buf = append(f.out.buf, fl.State(f.o.Now, f.o.StaleAfter)...)
	if fl.Approved != 0 {
		f.out.buf = append(f.out.buf, " (gen "...)
		f.out.buf = strconv.AppendUint(f.out.buf, fl.Approved, 10)
		f.out.buf = append(f.out.buf, ')')
	}
	f.end()
	if len(fl.Presented) > 0 {
		f.begin()
		f.note = true
		f.out.buf = append(f.out.buf, "    presented: "...)
		f.list(fl.Presented, ",", false)
		if fronted := fl.Fronted(); len(fronted) > 0 {
			f.out.buf = append(f.out.buf, "; FRONTED: "...)
			f.list(fronted, ",", false)
			f.out.buf = append(f.out.buf, " is not among the DNS names"...)
		}
		f.end()
	}
}

// aligner writes lines as a tabwriter (minwidth 0, padding 2, spaces)
// would: it keeps the lines of the current column block until a plain
// line ends it; notes are kept in place and take no part in the widths.
type aligner struct {
	w       *bufio.Writer
	pending []pendingLine
	widths  [reportCells - 1]int32
}

type pendingLine struct {
	c *chunkOut
	l *reportLine
}

func (a *aligner) chunk(c *chunkOut) error {
	for i := range c.lines {
		l := &c.lines[i]
		if l.kind == linePlain {
			if err := a.flush(); err != nil {
				return err
			}
			if _, err := a.w.Write(c.buf[l.start:l.end]); err != nil {
				return err
			}
			continue
		}
		a.pending = append(a.pending, pendingLine{c, l})
		if l.kind == lineRow {
			for k, x := range l.widths {
				a.widths[k] = max(a.widths[k], x)
			}
		}
	}
	return nil
}

var spaces = []byte(strings.Repeat(" ", 256))

// flush writes the pending block.
func (a *aligner) flush() error {
	defer func() {
		clear(a.pending)
		a.pending, a.widths = a.pending[:0], [reportCells - 1]int32{}
	}()
	for _, p := range a.pending {
		line := p.c.buf[p.l.start:p.l.end]
		if p.l.kind == lineRow {
			for k := range reportCells - 1 {
				tab := indexTab(line)
				a.w.Write(line[:tab])
				for pad := int(a.widths[k]+2) - int(p.l.widths[k]); pad > 0; pad -= len(spaces) {
					a.w.Write(spaces[:min(pad, len(spaces))])
				}
				line = line[tab+1:]
			}
		}
		if _, err := a.w.Write(line); err != nil {
			return err
		}
	}
	return nil
}

func indexTab(b []byte) int {
	for i, c := range b {
		if c == '\t' {
			return i
		}
	}
	return len(b)
}

// appendRowJSON appends "  " and the row as json.MarshalIndent(row, "  ",
// "  ") writes it, without reflection; ok false (and b unchanged) when a
// string needs escaping or a time is outside what JSON times hold: the
// caller uses encoding/json then.
func appendRowJSON(b []byte, r *ReportFlow) (_ []byte, ok bool) {
	w := rowJSON{b: b, ok: true}
	w.b = append(w.b, "  {\n    \"uid\": "...)
	w.b = append(strconv.AppendUint(w.b, uint64(r.UID), 10), ',')
	w.field("user")
	w.str(r.User)
	w.field(",proto")
	w.str(r.Proto)
	w.field(",ip")
	w.str(r.IP)
	w.field(",port")
	w.b = strconv.AppendUint(w.b, uint64(r.Port), 10)
	w.strs(",hostnames", r.Hostnames)
	w.field(",hits")
	w.b = strconv.AppendUint(w.b, r.Hits, 10)
	w.time(",first_seen", r.FirstSeen)
	w.time(",last_seen", r.LastSeen)
	w.strs(",processes", r.Processes)
	w.comms(r.Comms)
	w.strs(",cgroups", r.Cgroups)
	w.strs(",services", r.Services)
	if len(r.Presented) > 0 {
		w.strs(",presented", r.Presented)
	}
	if len(r.Fronted) > 0 {
		w.strs(",fronted", r.Fronted)
	}
	w.field(",state")
	w.str(r.State)
	if r.Approved != 0 {
		w.field(",approved_generation")
		w.b = strconv.AppendUint(w.b, r.Approved, 10)
	}
	w.b = append(w.b, "\n  }"...)
	if !w.ok {
		return b, false
	}
	return w.b, true
}

// rowJSON writes a row's members, indented as in an array.
type rowJSON struct {
	b  []byte
	ok bool
}

func (w *rowJSON) str(s string) {
	if !plainJSON(s) {
		w.ok = false
		return
	}
	w.b = append(append(append(w.b, '"'), s...), '"')
}

// field starts a member: name, with a comma before it when it begins with one.
func (w *rowJSON) field(name string) {
	if name[0] == ',' {
		w.b, name = append(w.b, ','), name[1:]
	}
	w.b = append(append(append(w.b, "\n    \""...), name...), "\": "...)
}

// array writes the field name with n items, as encoding/json indents
// them; item writes item i.
func (w *rowJSON) array(name string, n int, item func(i int)) {
	w.field(name)
	if n == 0 {
		w.b = append(w.b, "[]"...)
		return
	}
	w.b = append(w.b, '[')
	for i := range n {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, "\n      "...)
		item(i)
	}
	w.b = append(w.b, "\n    ]"...)
}

func (w *rowJSON) strs(name string, l []string) {
	w.array(name, len(l), func(i int) { w.str(l[i]) })
}

func (w *rowJSON) time(name string, t time.Time) {
	w.field(name)
	if y := t.Year(); y < 0 || y > 9999 {
		w.ok = false // encoding/json refuses it
		return
	}
	w.b = append(t.AppendFormat(append(w.b, '"'), time.RFC3339Nano), '"')
}

func (w *rowJSON) comms(comms []store.ProcessComm) {
	w.array(",comms", len(comms), func(i int) {
		w.b = append(w.b, "{\n        \"exe\": "...)
		w.str(comms[i].Exe)
		w.b = append(w.b, ",\n        \"comm\": "...)
		w.str(comms[i].Comm)
		w.b = append(w.b, "\n      }"...)
	})
}

// plainJSON reports whether encoding/json writes s as it is, in quotes:
// printable ASCII without '"', '\\' and the HTML characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
