// Package baseline says which flows a table is built from: the approved
// ones (Select), a fleet's merged exports (ReadFleet, Merge), or the next
// generation a reconcile proposes from what was learned and observed
// since (Reconcile), with the approvals an apply records.
package baseline

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// Select picks the flows a plan is built from: once an apply has
// approved flows, the approved ones (new flows wait as candidates for a
// reviewed reconcile); before that, every flow the learner saw.
func Select(flows []store.Flow) []store.Flow {
	var approved []store.Flow
	for _, f := range flows {
		if f.Approved != 0 {
			approved = append(approved, f)
		}
	}
	if approved == nil {
		return flows
	}
	return approved
}

// ReconcileOptions shape a proposal.
type ReconcileOptions struct {
	// StaleAfter proposes removing approved flows not seen for this long.
	StaleAfter time.Duration
	// MinHits is the hits a candidate (or a denied or audited
	// destination) needs to be proposed.
	MinHits uint64
	// Only keeps only additions ("add") or removals ("remove").
	Only string
	// StableAfter: a user with no new destination for this long has
	// converged.
	StableAfter time.Duration
	Now         time.Time
	UserName    func(uint32) string

	// IncludeDenied adds the destinations only the monitor saw (denied or
	// audited, never learned) to the next baseline; without it they are
	// listed apart and left out: anyone can knock on any destination.
	IncludeDenied bool

	// ServiceDepth is service_depth: how a cgroup path without a unit is
	// cut into a service (plan.ServiceOf).
	ServiceDepth int
	// Granted is what the current generation allows of the approved
	// flows (GrantedBy): an approved destination seen since from another
	// service, or from outside any service, is proposed as an addition
	// (source "new service" or "outside services"), not let into the
	// next table unreviewed. Nil: per-user rules, nothing to compare.
	Granted Granted
}

// Defaults of ReconcileOptions.
const (
	DefaultStaleAfter  = 30 * 24 * time.Hour
	DefaultStableAfter = 72 * time.Hour
)

// Change is one flow a proposal adds or removes.
type Change struct {
	UID  uint32 `json:"uid"`
	User string `json:"user,omitempty"`
	store.Dest
	Hits      uint64    `json:"hits"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Source: candidate (the learner saw it), denied or audit (the
	// monitor saw the table drop or log it), stale (not seen recently);
	// with per-service rules, "new service" (an approved destination seen
	// from services the current generation does not allow it for: those
	// are Services) or "outside services" (seen from outside any service,
	// which would allow it for every process of the user).
	Source string `json:"source"`
	// Services the flow came from (per-service rules): with match
	// service, the next table allows it for them, not for the user.
	Services []string `json:"services,omitempty"`

	key store.FlowKey
}

// Rename is an approved destination whose names changed since approval.
type Rename struct {
	IP  netip.Addr `json:"ip"`
	Old []string   `json:"old"`
	New []string   `json:"new"`
}

// Proposal is a reviewable change to the baseline of the next generation.
type Proposal struct {
	// Target and Table are what the proposal is against: generations
	// belong to a network namespace (Target its file, "" for the host's
	// own). Elsewhere are the other targets with generations of Table.
	Target    string                    `json:"target"`
	Table     string                    `json:"table"`
	Elsewhere []store.TargetGenerations `json:"generations_elsewhere"`

	Against     uint64              `json:"against_generation"` // 0: none applied in Target
	Now         time.Time           `json:"now"`
	StaleAfter  string              `json:"stale_after"`
	MinHits     uint64              `json:"min_hits"`
	Additions   []Change            `json:"additions"`
	Removals    []Change            `json:"removals"`
	Renamed     []Rename            `json:"renamed"`
	Convergence []store.Convergence `json:"convergence"`
	// Stable: every user has converged.
	Stable bool `json:"stable"`

	// Denied are destinations only the monitor saw the table drop or log:
	// never learned. They join the next baseline only with IncludeDenied.
	Denied        []Change `json:"denied"`
	IncludeDenied bool     `json:"include_denied"`
	// Only is --only: "add", "remove", or "" for both.
	Only string `json:"only,omitempty"`

	next []store.Flow
}

// Empty reports whether the proposal changes nothing.
func (p *Proposal) Empty() bool { return len(p.Adding()) == 0 && len(p.Removals) == 0 }

// Adding is what the next baseline adds: the additions, and the denied
// destinations when they are included.
func (p *Proposal) Adding() []Change {
	if !p.IncludeDenied {
		return p.Additions
	}
	return append(slices.Clone(p.Additions), p.Denied...)
}

// Next is the baseline of the next generation: the approved flows, less
// the removals, plus the additions.
func (p *Proposal) Next() []store.Flow { return p.next }

func changeOf(f store.Flow, source string, o ReconcileOptions) Change {
	c := Change{UID: f.UID, Dest: store.DestOf(f.FlowKey, f.Hostnames), Hits: f.Hits,
		FirstSeen: f.FirstSeen, LastSeen: f.LastSeen, Source: source, key: f.FlowKey}
	for _, cg := range f.Cgroups {
		if s := plan.ServiceOf(cg, o.ServiceDepth); s != "" && !slices.Contains(c.Services, s) {
			c.Services = append(c.Services, s)
		}
	}
	if o.UserName != nil {
		c.User = o.UserName(f.UID)
	}
	return c
}

// Reconcile proposes the next baseline from the store's flows, the
// monitor's observations, and the DNS names of the observed flows
// (store.FlowNames: the user's own lookups or a trusted resolver's).
func Reconcile(flows []store.Flow, obs []store.Observation, names map[store.FlowKey][]string, against uint64, o ReconcileOptions) *Proposal {
	if o.StaleAfter <= 0 {
		o.StaleAfter = DefaultStaleAfter
	}
	if o.StableAfter <= 0 {
		o.StableAfter = DefaultStableAfter
	}
	if o.MinHits == 0 {
		o.MinHits = 1
	}
	p := &Proposal{Against: against, Now: o.Now.UTC(), StaleAfter: o.StaleAfter.String(), MinHits: o.MinHits,
		Additions: []Change{}, Removals: []Change{}, Denied: []Change{}, Renamed: []Rename{}, IncludeDenied: o.IncludeDenied, Only: o.Only,
		Elsewhere: []store.TargetGenerations{}}
	known := map[store.FlowKey]bool{}
	for _, f := range flows {
		known[f.FlowKey] = true
		p.learned(f, o)
	}
	if o.Only != "remove" {
		p.deniedOnly(obs, known, names, o)
	}
	p.Renamed = dedupRenames(p.Renamed)
	sortChanges(p.Additions)
	sortChanges(p.Removals)
	sortChanges(p.Denied)
	p.converge(flows, o)
	return p
}

// learnable: a flow the allow-list can hold (tcp or udp, not loopback).
func learnable(f store.Flow) bool {
	return (f.Proto == plan.ProtoTCP || f.Proto == plan.ProtoUDP) && !f.IP.IsLoopback()
}

// learned sorts a flow of the store: an approved one stays (renamed when
// its names changed), a stale one goes, a candidate comes.
func (p *Proposal) learned(f store.Flow, o ReconcileOptions) {
	switch f.State(o.Now, o.StaleAfter) {
	case store.StateStale:
		if o.Only != "add" {
			p.Removals = append(p.Removals, changeOf(f, "stale", o))
			return
		}
		if kept, _, _, ok := o.Granted.split(f, o.ServiceDepth); ok {
			p.next = append(p.next, kept)
		}
	case store.StateApproved:
		p.approved(f, o)
		if !sameNames(f.Hostnames, f.ApprovedNames) {
			p.Renamed = append(p.Renamed, Rename{IP: f.IP, Old: nonNilStrings(f.ApprovedNames), New: nonNilStrings(f.Hostnames)})
		}
	case store.StateCandidate:
		if o.Only != "remove" && f.Hits >= o.MinHits && learnable(f) {
			p.Additions = append(p.Additions, changeOf(f, "candidate", o))
			p.next = append(p.next, f)
		}
	}
}

// approved keeps an approved flow in the next baseline, and proposes the
// services (or the per-user part) it was seen from since that the
// current generation does not allow it for (o.Granted).
func (p *Proposal) approved(f store.Flow, o ReconcileOptions) {
	kept, added, outside, ok := o.Granted.split(f, o.ServiceDepth)
	if o.Only == "remove" || (len(added) == 0 && !outside) {
		if ok {
			p.next = append(p.next, kept)
		}
		return
	}
	if len(added) > 0 {
		c := changeOf(f, "new service", o)
		c.Services = added
		p.Additions = append(p.Additions, c)
	}
	if outside {
		c := changeOf(f, "outside services", o)
		c.Services = nil
		p.Additions = append(p.Additions, c)
	}
	p.next = append(p.next, f)
}

// deniedOnly lists what the monitor saw the table drop or log, and the
// learner did not record (it may not run beside the table); included, it
// joins the next baseline.
func (p *Proposal) deniedOnly(obs []store.Observation, known map[store.FlowKey]bool, names map[store.FlowKey][]string, o ReconcileOptions) {
	seen := map[store.FlowKey]*store.Flow{}
	source := map[store.FlowKey]string{} // drop wins over audit
	var order []store.FlowKey
	for _, ob := range obs {
		if known[ob.FlowKey] || ob.UID == store.NoUID {
			continue
		}
		f, ok := seen[ob.FlowKey]
		if !ok {
			f = &store.Flow{FlowKey: ob.FlowKey, FirstSeen: ob.FirstSeen, LastSeen: ob.LastSeen, Hostnames: names[ob.FlowKey]}
			seen[ob.FlowKey] = f
			order = append(order, ob.FlowKey)
		}
		f.Hits += ob.Hits
		store.WidenSeen(&f.FirstSeen, &f.LastSeen, ob.FirstSeen, ob.LastSeen)
		// The services that sent it: with match service, the next table
		// allows it for them only, not for every process of the user.
		for _, svc := range ob.Services {
			if cg := "/" + svc; !slices.Contains(f.Cgroups, cg) {
				f.Cgroups = append(f.Cgroups, cg)
			}
		}
		if ob.Kind == store.ObsDrop || source[ob.FlowKey] == "" {
			source[ob.FlowKey] = ob.Kind
		}
	}
	for _, k := range order {
		f := *seen[k]
		if f.Hits >= o.MinHits && learnable(f) {
			p.Denied = append(p.Denied, changeOf(f, source[k], o))
			if o.IncludeDenied {
				p.next = append(p.next, f)
			}
		}
	}
}

// converge says, per user, whether the soak has converged.
func (p *Proposal) converge(flows []store.Flow, o ReconcileOptions) {
	var live []store.Flow
	for _, f := range flows {
		if f.State(o.Now, 0) != store.StateRetired {
			live = append(live, f)
		}
	}
	p.Convergence = store.Converge(live, o.Now, 7, o.StableAfter)
	p.Stable = true
	for i := range p.Convergence {
		if o.UserName != nil {
			p.Convergence[i].User = o.UserName(p.Convergence[i].UID)
		}
		p.Stable = p.Stable && p.Convergence[i].Stable
	}
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func dedupRenames(r []Rename) []Rename {
	slices.SortFunc(r, func(a, b Rename) int { return a.IP.Compare(b.IP) })
	return slices.CompactFunc(r, func(a, b Rename) bool { return a.IP == b.IP })
}

func sortChanges(c []Change) {
	// Changes are of tcp and udp flows: the key's protocol number sorts
	// them as their names would.
	slices.SortFunc(c, func(a, b Change) int { return a.key.Compare(b.key) })
}

// Keys returns the flow keys of changes.
func Keys(c []Change) []store.FlowKey {
	out := make([]store.FlowKey, len(c))
	for i := range c {
		out[i] = c[i].key
	}
	return out
}

// Write prints the proposal for review: per user, with names, hits and
// last seen.
func (p *Proposal) Write(w io.Writer) error {
	var b strings.Builder
	p.writeHead(&b)
	writeChanges := func(title, sign string, cs []Change, why string) {
		if len(cs) == 0 {
			fmt.Fprintf(&b, "\n%s: none (%s)\n", title, why)
			return
		}
		fmt.Fprintf(&b, "\n%s:\n", title)
		for i, c := range cs {
			if i == 0 || c.UID != cs[i-1].UID {
				fmt.Fprintf(&b, "  user %s (uid %d)\n", textsafe.String(c.User), c.UID)
			}
			names := textsafe.Join(c.Hostnames, ",")
			if names == "" {
				names = "-"
			}
			svc := ""
			if len(c.Services) > 0 {
				svc = "  service " + textsafe.Join(c.Services, ",")
			}
			fmt.Fprintf(&b, "    %s %s %s  %s  hits %d  last seen %s  [%s]%s\n", sign, c.Proto, netip.AddrPortFrom(c.IP, c.Port), names,
				c.Hits, c.LastSeen.Local().Format(time.DateTime), c.Source, svc)
		}
	}
	noAdd, noRemove := fmt.Sprintf("no candidate: no flow learned since its approval was seen %d times or more", p.MinHits),
		"every approved flow was seen within "+p.StaleAfter
	noDenied := "the monitor recorded no denied destination the learner never saw"
	switch p.Only {
	case "remove":
		noAdd, noDenied = "--only remove", "--only remove"
	case "add":
		noRemove = "--only add"
	}
	writeChanges("add", "+", p.Additions, noAdd)
	writeChanges("remove", "-", p.Removals, noRemove)
	if p.IncludeDenied {
		writeChanges("denied only, added (--include-denied)", "+", p.Denied, noDenied)
	} else {
		writeChanges("denied only, never learned (not added; --include-denied adds them)", "?", p.Denied, noDenied)
	}
	if len(p.Renamed) > 0 {
		fmt.Fprintf(&b, "\nrenamed (names changed since approval; the rules follow addresses):\n")
		for _, r := range p.Renamed {
			fmt.Fprintf(&b, "    ~ %s: %s -> %s\n", r.IP, dash(textsafe.Join(r.Old, ",")), dash(textsafe.Join(r.New, ",")))
		}
	}
	fmt.Fprintf(&b, "\nconvergence (new destinations per day, the last 7 days, oldest first):\n")
	for _, c := range p.Convergence {
		state := "stable"
		if !c.Stable {
			state = "still learning"
		}
		days := make([]string, len(c.NewPerDay))
		for i, n := range c.NewPerDay {
			days[i] = fmt.Sprint(n)
		}
		fmt.Fprintf(&b, "  %s (uid %d): %d destinations, last new %s ago, per day [%s]: %s\n", textsafe.String(c.User), c.UID, c.Flows,
			p.Now.Sub(c.LastNew).Round(time.Minute), strings.Join(days, " "), state)
	}
	if len(p.Convergence) == 0 {
		b.WriteString("  no learned flow yet: nothing has converged (egress-learn run records flows)\n")
	} else if p.Stable {
		b.WriteString("every user has converged: no new destination recently\n")
	} else {
		b.WriteString("not converged yet: some users still reach new destinations\n")
	}
	fmt.Fprintf(&b, "\n%d to add, %d to remove", len(p.Adding()), len(p.Removals))
	if len(p.Denied) > 0 && !p.IncludeDenied {
		fmt.Fprintf(&b, ", %d denied only left out", len(p.Denied))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeHead says what the proposal is against: which generation of which
// table in which network namespace, and where the others are.
func (p *Proposal) writeHead(b *strings.Builder) {
	t := nft.Target{Netns: p.Target}
	if p.Against != 0 {
		fmt.Fprintf(b, "reconcile table inet %s in %s against its current generation %d", p.Table, t, p.Against)
	} else {
		fmt.Fprintf(b, "reconcile table inet %s in %s: no generation was applied there yet, every learned flow is a candidate", p.Table, t)
	}
	fmt.Fprintf(b, " (at %s, stale after %s, min hits %d)\n", p.Now.Local().Format(time.DateTime), p.StaleAfter, p.MinHits)
	if e := nft.Elsewhere(p.Table, p.Elsewhere); e != "" {
		fmt.Fprintf(b, "  %s\n", e)
	}
}

// dash stands for an empty list.
func dash(s string) string { return cmp.Or(s, "-") }

// ReconcileStore proposes the next baseline from what the store holds:
// its flows, the monitor's observations, and the DNS names of the observed
// flows as the learner gives them (the user's own lookups, or those of the
// trusted resolvers; never another user's).
func ReconcileStore(st *store.Store, resolvers []uint32, against uint64, o ReconcileOptions) (*Proposal, error) {
	flows, err := st.Flows()
	if err != nil {
		return nil, err
	}
	obs, err := st.Observations()
	if err != nil {
		return nil, err
	}
	keys := make([]store.FlowKey, 0, len(obs))
	for _, o := range obs {
		keys = append(keys, o.FlowKey)
	}
	names, err := st.FlowNames(keys, resolvers)
	if err != nil {
		return nil, err
	}
	return Reconcile(flows, obs, names, against, o), nil
}
