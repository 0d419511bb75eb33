//go:build linux

package monitor

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// DeniedSummary is what the monitor recorded: the destinations the
// allow-list did not cover, by user, and the rate around the last apply.
type DeniedSummary struct {
	Since        time.Time    `json:"since,omitzero"` // zero: everything recorded
	Until        time.Time    `json:"until"`
	Dropped      uint64       `json:"dropped"`
	Audited      uint64       `json:"audited"`
	Destinations []DeniedDest `json:"destinations"`
	Users        []DeniedUser `json:"users"`
	Rate         *RateChange  `json:"rate,omitempty"`

	// Target (a network namespace's file, "" for the host's) and Table
	// are what Rate is about; Elsewhere lists the other targets with
	// generations of the table when Target has none.
	Target    string                    `json:"target"`
	Table     string                    `json:"table"`
	Elsewhere []store.TargetGenerations `json:"generations_elsewhere,omitempty"`

	// Unrecorded are packets (since the store was made) whose destination
	// the monitor's bounds left out; they are not in Dropped or Audited.
	Unrecorded store.Unrecorded `json:"unrecorded"`
	// RefusedNames are the names the name check refused (see
	// refused.go); RefusedUnrecorded the refused connections its bound
	// left out.
	RefusedNames      []RefusedName `json:"refused_names"`
	RefusedUnrecorded uint64        `json:"refused_unrecorded"`
}

// DeniedDest is one destination one user was denied (or audited).
type DeniedDest struct {
	UID  uint32 `json:"uid"`
	User string `json:"user"`
	store.Dest
	Dropped   uint64    `json:"dropped"`
	Audited   uint64    `json:"audited"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Processes (executables) and Comms (process names that differ from
	// their executable's) come from the learner's record of the same
	// flow, when it has one.
	Processes []string            `json:"processes"`
	Comms     []store.ProcessComm `json:"comms"`
	// Services sent the packets, when the monitor could tell (the
	// socket still open when the log was read; per-service rules).
	Services []string `json:"services,omitempty"`
}

// DeniedUser sums one user's denied packets.
type DeniedUser struct {
	UID          uint32 `json:"uid"`
	User         string `json:"user"`
	Dropped      uint64 `json:"dropped"`
	Audited      uint64 `json:"audited"`
	Destinations int    `json:"destinations"`
}

// RateChange compares the logged packets per minute before and after the
// last apply: the error rate after a policy change.
type RateChange struct {
	Generation   uint64    `json:"generation"`
	Mode         string    `json:"mode"`
	Applied      time.Time `json:"applied"`
	Window       string    `json:"window"` // how far before the apply was looked at
	BeforePerMin float64   `json:"before_per_min"`
	AfterPerMin  float64   `json:"after_per_min"`
	DropBefore   uint64    `json:"drop_before"`
	DropAfter    uint64    `json:"drop_after"`
	AuditBefore  uint64    `json:"audit_before"`
	AuditAfter   uint64    `json:"audit_after"`
}

// Denied summarizes the observations seen since now-since (all for 0)
// and, when the target has a generation, the rate around its last apply.
// A destination carries the names the learner would give a flow of its
// user (store.NamesFor: the user's own lookups, else those of the
// resolvers), not every name its address ever had.
func Denied(st *store.Store, t nft.Target, table string, since time.Duration, now time.Time, resolvers []uint32, userName func(uint32) string) (*DeniedSummary, error) {
	obs, err := st.Observations()
	if err != nil {
		return nil, err
	}
	s := &DeniedSummary{Target: t.Path(), Table: table, Until: now.UTC(), Destinations: []DeniedDest{}, Users: []DeniedUser{}}
	if since > 0 {
		s.Since = now.Add(-since).UTC()
	}
	dests, keys := s.destinations(obs, since > 0, userName)
	if err := s.describe(st, dests, keys, resolvers); err != nil {
		return nil, err
	}
	if s.Rate, err = rateChange(st, t, table, since, now); err != nil {
		return nil, err
	}
	if s.Rate == nil {
		if s.Elsewhere, err = rollout.Elsewhere(st, t, table); err != nil {
			return nil, err
		}
	}
	if s.Unrecorded, err = st.Unrecorded(); err != nil {
		return nil, err
	}
	if s.RefusedNames, s.RefusedUnrecorded, err = refusedNames(st, s.Since, userName); err != nil {
		return nil, err
	}
	return s, nil
}

// destinations sums the observations (those since s.Since when recent)
// by destination, in the order first seen.
func (s *DeniedSummary) destinations(obs []store.Observation, recent bool, userName func(uint32) string) (map[store.FlowKey]*DeniedDest, []store.FlowKey) {
	dests := map[store.FlowKey]*DeniedDest{}
	var keys []store.FlowKey
	for _, o := range obs {
		if recent && o.LastSeen.Before(s.Since) {
			continue
		}
		d, ok := dests[o.FlowKey]
		if !ok {
			d = &DeniedDest{UID: o.UID, Dest: store.DestOf(o.FlowKey, nil), FirstSeen: o.FirstSeen, LastSeen: o.LastSeen,
				Processes: []string{}, Comms: []store.ProcessComm{}}
			if userName != nil {
				d.User = userName(o.UID)
			}
			dests[o.FlowKey] = d
			keys = append(keys, o.FlowKey)
		}
		if o.Kind == store.ObsDrop {
			d.Dropped += o.Hits
			s.Dropped += o.Hits
		} else {
			d.Audited += o.Hits
			s.Audited += o.Hits
		}
		store.WidenSeen(&d.FirstSeen, &d.LastSeen, o.FirstSeen, o.LastSeen)
		for _, svc := range o.Services {
			if !slices.Contains(d.Services, svc) {
				d.Services = append(d.Services, svc)
			}
		}
	}
	return dests, keys
}

// describe names the destinations and their processes from the store,
// sums them by user, and sorts both, most denied first.
func (s *DeniedSummary) describe(st *store.Store, dests map[store.FlowKey]*DeniedDest, keys []store.FlowKey, resolvers []uint32) error {
	names, err := st.FlowNames(keys, resolvers)
	if err != nil {
		return err
	}
	learned, err := st.FlowsFor(keys)
	if err != nil {
		return err
	}
	users := map[uint32]*DeniedUser{}
	for _, k := range keys {
		d := dests[k]
		if n := names[k]; n != nil {
			d.Hostnames = n
		}
		if f, ok := learned[k]; ok && f.Processes != nil {
			d.Processes = f.Processes
			if f.Comms != nil {
				d.Comms = f.Comms
			}
		}
		s.Destinations = append(s.Destinations, *d)
		u, ok := users[d.UID]
		if !ok {
			u = &DeniedUser{UID: d.UID, User: d.User}
			users[d.UID] = u
		}
		u.Dropped += d.Dropped
		u.Audited += d.Audited
		u.Destinations++
	}
	slices.SortFunc(s.Destinations, func(a, b DeniedDest) int {
		return cmp.Or(cmp.Compare(b.Dropped+b.Audited, a.Dropped+a.Audited), cmp.Compare(a.UID, b.UID), a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port))
	})
	for _, u := range users {
		s.Users = append(s.Users, *u)
	}
	slices.SortFunc(s.Users, func(a, b DeniedUser) int {
		return cmp.Or(cmp.Compare(b.Dropped+b.Audited, a.Dropped+a.Audited), cmp.Compare(a.UID, b.UID))
	})
	return nil
}

// rateChange compares the minutes before and after the current
// generation's apply; the window before is --since, or an hour.
func rateChange(st *store.Store, t nft.Target, table string, since time.Duration, now time.Time) (*RateChange, error) {
	g, err := rollout.Current(st, t, table)
	if err != nil || g == nil {
		return nil, err
	}
	window := since
	if window <= 0 {
		window = time.Hour
	}
	applied := g.Time
	from, at, to := applied.Add(-window).Unix()/60, applied.Unix()/60, now.Unix()/60
	minutes, err := st.Denials(from, to)
	if err != nil {
		return nil, err
	}
	r := &RateChange{Generation: g.N, Mode: g.Mode, Applied: applied, Window: window.String()}
	for m, c := range minutes {
		if m < at {
			r.DropBefore += c.Drop
			r.AuditBefore += c.Audit
		} else {
			r.DropAfter += c.Drop
			r.AuditAfter += c.Audit
		}
	}
	r.BeforePerMin = float64(r.DropBefore+r.AuditBefore) / window.Minutes()
	after := now.Sub(applied).Minutes()
	if after < 1 {
		after = 1
	}
	r.AfterPerMin = float64(r.DropAfter+r.AuditAfter) / after
	return r, nil
}

// Write prints the summary for people.
func (s *DeniedSummary) Write(w io.Writer, top int) error {
	var b strings.Builder
	span := "everything recorded"
	if !s.Since.IsZero() {
		span = "since " + s.Since.Local().Format(time.DateTime)
	}
	fmt.Fprintf(&b, "denied traffic that \"egress-enforce watch\" recorded, %s: %d packets dropped, %d audited (logged, not blocked)\n", span, s.Dropped, s.Audited)
	b.WriteString("(the packets the default rules logged; status counts every packet, also those over the log's rate limit)\n")
	if len(s.Destinations) == 0 && len(s.RefusedNames) == 0 {
		b.WriteString("nothing recorded: no packet was logged while \"egress-enforce watch\" ran with this store (does it run? is a table applied?)\n")
	} else if len(s.Destinations) == 0 {
		b.WriteString("no packet was logged by the table's default rules\n")
	} else {
		fmt.Fprintf(&b, "\nmost denied destinations:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		// A SERVICE column when some packets came from a known service.
		svc := func(d DeniedDest) string { return "" }
		head := "  USER\t"
		if slices.ContainsFunc(s.Destinations, func(d DeniedDest) bool { return len(d.Services) > 0 }) {
			head += "SERVICE\t"
			svc = func(d DeniedDest) string { return dash(textsafe.Join(d.Services, ",")) + "\t" }
		}
		fmt.Fprintln(tw, head+"DESTINATION\tHOSTNAMES\tDROPPED\tAUDITED\tLAST SEEN\tPROCESSES")
		for i, d := range s.Destinations {
			if i == top {
				fmt.Fprintf(tw, "  ... %d more\n", len(s.Destinations)-top)
				break
			}
			fmt.Fprintf(tw, "  %s\t%s%s/%d %s\t%s\t%d\t%d\t%s\t%s\n", textsafe.String(d.User), svc(d), d.Proto, d.Port, d.IP, dash(textsafe.Join(d.Hostnames, ",")),
				d.Dropped, d.Audited, d.LastSeen.Local().Format(time.DateTime), dash(textsafe.Join(store.ProcessNames(d.Processes, d.Comms), ", ")))
		}
		_ = tw.Flush()
		fmt.Fprintf(&b, "\nby user:\n")
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  USER\tUID\tDROPPED\tAUDITED\tDESTINATIONS")
		for _, u := range s.Users {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\n", textsafe.String(u.User), u.UID, u.Dropped, u.Audited, u.Destinations)
		}
		_ = tw.Flush()
	}
	s.writeRefused(&b, top)
	if u := s.Unrecorded; !u.IsZero() {
		fmt.Fprintf(&b, "\nnot in this list: %d dropped and %d audited packets (%d observations) that the monitor's bounds left out (a flood of distinct destinations)\n",
			u.Drop, u.Audit, u.Records)
	}
	if s.Rate == nil {
		fmt.Fprintf(&b, "\nno apply to compare the rate with: no generation of table inet %s in %s\n", s.Table, nft.Target{Netns: s.Target})
		if e := nft.Elsewhere(s.Table, s.Elsewhere); e != "" {
			fmt.Fprintf(&b, "%s\n", e)
		}
	}
	if r := s.Rate; r != nil {
		fmt.Fprintf(&b, "\nlast apply: generation %d (%s) at %s: %.1f logged packets/min in the %s before, %.1f/min since (dropped: %d before, %d since; audited: %d before, %d since)\n",
			r.Generation, r.Mode, r.Applied.Local().Format(time.DateTime), r.BeforePerMin, shortDuration(r.Window), r.AfterPerMin,
			r.DropBefore, r.DropAfter, r.AuditBefore, r.AuditAfter)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// shortDuration drops the zero minutes and seconds of a duration's text
// ("1h0m0s" is "1h").
func shortDuration(d string) string {
	if strings.HasSuffix(d, "m0s") {
		d = strings.TrimSuffix(d, "0s")
	}
	if strings.HasSuffix(d, "h0m") {
		d = strings.TrimSuffix(d, "0m")
	}
	return d
}

// dash stands for an empty list.
func dash(s string) string { return cmp.Or(s, "-") }
