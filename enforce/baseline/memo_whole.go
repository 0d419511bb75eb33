package baseline

import (
	"cmp"
	"fmt"
	"sync"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// readFlows reads every flow of a whole read (a.r's, against its empty
// memo), the export's flows being halves[0] then halves[1], and sums
// their bytes. The halves are read at once, the second on another core
// by an againstRead of its own (its own Plainer), when the export was
// decoded in halves (halves[1] not nil: store.DecodeExportSpans, for an
// export of 256 KiB or more, ~1k flows). The second half's appends go
// to the room past the first half's in a.r's read, V4 and V6 (sized for
// every flow), then joined to the first half's in flow order: the same
// read as in one go (read: every flow makes one entry, so the halves'
// are the array's first h and the rest). The
// halves' Plainers name users from a map filled first: o.UserName need
// not be safe for concurrent use (config.UserNames is not). (The flows
// were read on one core while the other made only their sums: ~90 of
// ~200 ms of a 100k full apply's read; at 1M the read took 2.4-2.8 s,
// 2.0-2.25 s in halves.) The error is the first flow's in export order.
func (a *againstRead) readFlows(halves [2][]store.Flow, spans []store.Span, o *plan.Options) error {
	r, h := a.r, len(halves[0])
	n := h + len(halves[1])
	v4, v4h := 0, 0
	for k, flows := range halves {
		for i := range flows {
			if flows[i].IP.Is4() {
				v4++
				if k == 0 {
					v4h++
				}
			}
		}
	}
	// Room for every flow's element, and a name rule each (slices sized once).
	r.Plain.V4, r.Plain.V6 = make([]plan.Element, 0, v4), make([]plan.Element, 0, n-v4)
	r.sums = make([]store.FlowSum, n)
	a.added = make([]plan.NameRule, 0, n)
	run := func(x *againstRead, flows []store.Flow, at int) error {
		summer := store.NewFlowSummer(r.key)
		for i := range flows {
			sp := spans[at+i]
			r.sums[at+i] = summer.Sum(r.data[sp.Start:sp.End])
			if _, err := x.flow(at+i, store.FlowRef{Span: sp, Old: -1, Flow: &flows[i]}); err != nil {
				return err
			}
		}
		return nil
	}
	if h == n {
		a.pl = plan.NewPlainer(*o)
		return run(a, halves[0], 0)
	}
	if o.UserName != nil {
		named := *o
		names := userNames(halves, o.UserName)
		named.UserName = func(uid uint32) string { return names[uid] }
		o = &named
	}
	a.pl = plan.NewPlainer(*o)
	var e2 store.Export
	r2 := ExportRead{data: r.data, flows: r.flows, read: r.read[h:h], old: r.old}
	r2.Plain.V4, r2.Plain.V6 = r.Plain.V4[v4h:v4h], r.Plain.V6[h-v4h:h-v4h]
	b := againstRead{r: &r2, m: a.m, pl: plan.NewPlainer(*o), hosts: a.hosts, e: &e2,
		added: make([]plan.NameRule, 0, n-h), rdBase: int32(h)}
	var err2 error
	var wg sync.WaitGroup
	wg.Go(func() { err2 = run(&b, halves[1], h) })
	err := run(a, halves[0], 0)
	wg.Wait()
	if err := cmp.Or(err, err2); err != nil {
		return err
	}
	// Every flow read made one entry of read: the halves' entries are
	// read[:h] and read[h:n] of one array.
	if len(r.read) != h || len(r2.read) != n-h {
		return fmt.Errorf("read the flows in halves: %d and %d entries for %d and %d flows", len(r.read), len(r2.read), h, n-h)
	}
	r.read = r.read[:n]
	r.Plain.V4, r.Plain.V6 = joined(r.Plain.V4, r2.Plain.V4), joined(r.Plain.V6, r2.Plain.V6)
	r.Plain.N += r2.Plain.N
	a.added = append(a.added, b.added...)
	a.warnings = append(a.warnings, b.warnings...)
	a.e.Flows = append(a.e.Flows, e2.Flows...)
	return nil
}

// userNames names the users of the flows of the lists (in key order: a
// UID's flows are together).
func userNames(lists [2][]store.Flow, name func(uint32) string) map[uint32]string {
	names := map[uint32]string{}
	prev, seen := uint32(0), false
	for _, flows := range lists {
		for i := range flows {
			if uid := flows[i].UID; !seen || uid != prev {
				names[uid] = name(uid)
				prev, seen = uid, true
			}
		}
	}
	return names
}

// joined is s followed by t, where t lies in s's array at or past its
// end (what a second half appended in the room past the first's): t is
// moved down only when the first half left room unused.
func joined[T any](s, t []T) []T {
	n := len(s)
	s = s[:n+len(t)]
	if len(t) > 0 && &s[n] != &t[0] {
		copy(s[n:], t)
	}
	return s
}
