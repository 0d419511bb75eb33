package promote

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/egresskit/egress/store"
)

// destText writes a destination for people: "tcp 10.0.0.1:443
// (api.example.com)".
func destText(d *Destination) string {
	s := d.Proto + " " + netip.AddrPortFrom(d.IP, d.Port).String()
	if len(d.Hostnames) > 0 {
		names := d.Hostnames
		if len(names) > 3 {
			names = append(slices.Clone(names[:3]), fmt.Sprintf("+%d", len(d.Hostnames)-3))
		}
		s += " (" + strings.Join(names, " ") + ")"
	}
	return s
}

func destOf(k store.FlowKey, names []string, hits uint64, first, last time.Time) Destination {
	return Destination{Dest: store.DestOf(k, names), Hits: hits, FirstSeen: first, LastSeen: last}
}

// flowReasons: uid's destinations first seen in the quiet period, and
// the candidates (not in the table) seen in it or since the current
// generation, which enforcement would drop.
func (e *evaluation) flowReasons(uid uint32) []Reason {
	var fresh, outside []item
	for _, f := range e.flows[uid] {
		it := item{Destination: destOf(f.FlowKey, f.Hostnames, f.Hits, f.FirstSeen, f.LastSeen)}
		it.notIn = f.State(e.r.Now, 0) == store.StateCandidate && !e.elements[f.FlowKey]
		recent := !f.LastSeen.Before(e.r.Since) || !f.LastSeen.Before(e.in.Current.Time)
		switch {
		case !f.FirstSeen.Before(e.r.Since):
			fresh = append(fresh, it)
		case it.notIn && recent:
			outside = append(outside, it)
		}
	}
	var out []Reason
	out = append(out, e.listed(ReasonNewDestination, fresh, func(it item) (string, *time.Time) {
		notIn := ""
		if it.notIn {
			notIn = ", not in the table (a candidate: egress-enforce reconcile proposes it)"
		}
		at := it.FirstSeen.Add(e.o.QuietFor)
		return fmt.Sprintf("new destination %s, first seen %s%s; quiet after %s", destText(&it.Destination), timeText(it.FirstSeen), notIn, timeText(at)), &at
	})...)
	out = append(out, e.listed(ReasonNotInTable, outside, func(it item) (string, *time.Time) {
		return fmt.Sprintf("%s is not in the table (a candidate, last seen %s): enforced, it would be dropped; egress-enforce reconcile proposes it",
			destText(&it.Destination), timeText(it.LastSeen)), nil
	})...)
	return out
}

// observedReasons: what the table audited or dropped of uid's packets in
// the quiet period, as the monitor recorded it, named as the learner
// named the same flow, else by the DNS table.
func (e *evaluation) observedReasons(uid uint32) []Reason {
	learned := map[store.FlowKey][]string{}
	for _, f := range e.flows[uid] {
		if len(f.Hostnames) > 0 {
			learned[f.FlowKey] = f.Hostnames
		}
	}
	by := map[string][]item{}
	for _, ob := range e.observed[uid] {
		names := learned[ob.FlowKey]
		if names == nil {
			names = e.in.Names[ob.FlowKey]
		}
		by[ob.Kind] = append(by[ob.Kind], item{Destination: destOf(ob.FlowKey, slices.Clone(names), ob.Hits, ob.FirstSeen, ob.LastSeen)})
	}
	var out []Reason
	for _, k := range []struct{ kind, reason, verb string }{
		{store.ObsAudit, ReasonAudited, "audited (enforced, it would have been dropped)"},
		{store.ObsDrop, ReasonDropped, "dropped"},
	} {
		out = append(out, e.listed(k.reason, by[k.kind], func(it item) (string, *time.Time) {
			at := it.LastSeen.Add(e.o.QuietFor)
			return fmt.Sprintf("%s: %s, %d packet(s) from %s to %s; quiet after %s", k.verb, destText(&it.Destination), it.Hits,
				timeText(it.FirstSeen), timeText(it.LastSeen), timeText(at)), &at
		})...)
	}
	return out
}

// item is a destination a reason names; notIn: not in the table.
type item struct {
	Destination
	notIn bool
}

// listed makes a reason of each item, newest first, at most maxListed,
// and one that counts the rest.
func (e *evaluation) listed(kind string, items []item, text func(item) (string, *time.Time)) []Reason {
	slices.SortFunc(items, func(a, b item) int { return byRecent(a.Destination, b.Destination) })
	var out []Reason
	for i, it := range items {
		if i == maxListed {
			out = append(out, Reason{Kind: kind, Text: fmt.Sprintf("and %d more (%s)", len(items)-i, strings.ReplaceAll(kind, "_", " "))})
			break
		}
		s, at := text(it)
		d := it.Destination
		out = append(out, Reason{Kind: kind, Text: s, Destination: &d, At: at})
	}
	return out
}
