// Package promote says, for each principal (a user; a service once rules
// are per service), whether it is ready to leave audit for enforcement,
// and why not, from evidence only: no new destination for the quiet
// period, no packet the table audited (or dropped) for it in that period
// while the monitor was recording, and every scheduled job that runs as
// it seen during the soak. Missing evidence is a reason, never a pass: a
// period no run of the monitor covers, or no table logged, or packets
// the monitor could not attribute, keeps every principal in audit.
//
// Evaluate is a pure function of the store's records, the current
// generation's plan and the coverage of the scheduled jobs; Next is the
// plan that enforces the ready ones too: the current allow-list, staged
// (plan.Restage), for rollout's one apply path.
package promote

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/egresskit/egress/coverage"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// DefaultQuietFor is how long a principal must have been quiet.
const DefaultQuietFor = 7 * 24 * time.Hour

// MaxGap is the longest stretch without a record of the monitor that
// still counts as recorded: a restart of the watch, and its heartbeat
// (monitor.Heartbeat) and flush.
const MaxGap = 2 * time.Minute

// maxListed bounds the destinations and jobs each principal lists per
// kind of reason; the rest is counted.
const maxListed = 10

// Input is what the store and the host say.
type Input struct {
	Flows        []store.Flow
	Observations []store.Observation
	// Denials are the per-minute counts of the monitor over the period.
	Denials map[int64]store.DenialCount
	Watches []store.Watch
	// Generations are the target's and table's, oldest first; Current is
	// the current one, and Plan its plan.
	Generations []store.Generation
	Current     *store.Generation
	Plan        *plan.Plan
	// Names are the DNS names of the destinations the monitor saw, as the
	// learner names a flow of their user (store.FlowNames).
	Names map[store.FlowKey][]string
	// Jobs is the scan of the scheduled jobs; JobsErr why there is none.
	Jobs    *coverage.Coverage
	JobsErr error
}

// Options say when and for whom.
type Options struct {
	Now      time.Time
	QuietFor time.Duration
	// Target is the namespace of the table as generations and the
	// monitor's runs name it (nft.Target.Path; "" for the host's).
	Target   string
	UserName func(uint32) string
}

// Principal states.
const (
	StateAudited  = "audited"
	StateEnforced = "enforced"
)

// Report is the proposal: each principal, ready or not and why, and
// what --apply would stage.
type Report struct {
	Now        time.Time `json:"now"`
	QuietFor   string    `json:"quiet_for"`
	Since      time.Time `json:"since"` // the start of the quiet period
	Target     string    `json:"target"`
	Table      string    `json:"table"`
	Generation uint64    `json:"generation"`
	Staging
	Monitor    MonitorEvidence `json:"monitor"`
	Jobs       JobEvidence     `json:"jobs"`
	Principals []Principal     `json:"principals"`
	// Ready are the principals --apply enforces, and Next the staging
	// after it (nil: nothing to promote).
	Ready []uint32 `json:"ready"`
	Next  *Staging `json:"next,omitempty"`
	Notes []string `json:"notes"`
}

// Staging is who a table enforces.
type Staging struct {
	Mode        plan.Mode `json:"mode"`
	EnforceUIDs []uint32  `json:"enforce_uids,omitempty"`
	AuditUIDs   []uint32  `json:"audit_uids,omitempty"`
}

// Principal is one user and whether it is ready for enforcement.
type Principal struct {
	Kind  string `json:"kind"` // user
	UID   uint32 `json:"uid"`
	Name  string `json:"name"`
	State string `json:"state"` // audited or enforced
	// Ready: audited, and no reason against it.
	Ready   bool     `json:"ready"`
	Reasons []Reason `json:"reasons"`
	// Flows is how many flows the baseline holds for it, and LastNew when
	// the newest was first seen.
	Flows   int        `json:"flows"`
	LastNew *time.Time `json:"last_new,omitempty"`
}

// Reason kinds.
const (
	ReasonNoTable           = "no_table"
	ReasonNoMonitorData     = "no_monitor_data"
	ReasonMonitorIncomplete = "monitor_incomplete"
	ReasonNewDestination    = "new_destination"
	ReasonNotInTable        = "not_in_table"
	ReasonAudited           = "audited"
	ReasonDropped           = "dropped"
	ReasonJobNotSeen        = "job_not_seen"
	ReasonJobsUnknown       = "jobs_unknown"
)

// Reason is one thing that keeps a principal in audit.
type Reason struct {
	Kind        string       `json:"kind"`
	Text        string       `json:"text"`
	Destination *Destination `json:"destination,omitempty"`
	Job         string       `json:"job,omitempty"`
	// At is when the principal stops failing this check, when time alone
	// can fix it (the quiet period after a packet).
	At *time.Time `json:"quiet_after,omitempty"`
}

// Destination is where a reason's packets or flow went.
type Destination struct {
	store.Dest
	Hits      uint64    `json:"hits"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Evaluate judges every principal the records know: the users of the
// baseline's flows, of the monitor's observations in the period, of the
// staged sets, and of the scheduled jobs.
func Evaluate(in Input, o Options) (*Report, error) {
	if in.Current == nil || in.Plan == nil {
		return nil, fmt.Errorf("no current generation: apply the table in audit mode first (egress-enforce apply --mode audit), and run egress-enforce watch through the soak")
	}
	if o.QuietFor <= 0 {
		return nil, fmt.Errorf("--quiet-for: %s is not a positive duration", o.QuietFor)
	}
	r := &Report{Now: o.Now.UTC(), QuietFor: o.QuietFor.String(), Since: o.Now.Add(-o.QuietFor).UTC(), Target: o.Target,
		Table: in.Plan.Table, Generation: in.Current.N, Staging: stagingOf(in.Plan), Principals: []Principal{}, Ready: []uint32{},
		Notes: []string{}}
	if in.Current.Restores != 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("generation %d puts back the table of generation %d", in.Current.N, in.Current.Restores))
	}
	e := newEvaluation(in, o, r)
	common := e.monitorEvidence()
	e.jobEvidence()
	for _, uid := range e.principals() {
		r.Principals = append(r.Principals, e.judge(uid, common))
	}
	for _, p := range r.Principals {
		if p.Ready {
			r.Ready = append(r.Ready, p.UID)
		}
	}
	if len(r.Ready) > 0 {
		next := r.Staging.promote(r.Ready)
		r.Next = &next
	}
	return r, nil
}

// evaluation is one Evaluate's state, with the records indexed by user
// (each principal looks only at its own).
type evaluation struct {
	in       Input
	o        Options
	r        *Report
	flows    map[uint32][]*store.Flow
	observed map[uint32][]*store.Observation // in the period
	elements map[store.FlowKey]bool          // the allow elements of the current table
}

func newEvaluation(in Input, o Options, r *Report) *evaluation {
	e := &evaluation{in: in, o: o, r: r, flows: map[uint32][]*store.Flow{}, observed: map[uint32][]*store.Observation{},
		elements: make(map[store.FlowKey]bool, in.Plan.Elements())}
	for i := range in.Flows {
		f := &in.Flows[i]
		e.flows[f.UID] = append(e.flows[f.UID], f)
	}
	for i := range in.Observations {
		if ob := &in.Observations[i]; !ob.LastSeen.Before(r.Since) {
			e.observed[ob.UID] = append(e.observed[ob.UID], ob)
		}
	}
	for _, s := range in.Plan.Sets {
		for _, el := range s.Elements {
			e.elements[store.FlowKey{UID: el.UID, Proto: el.Proto, IP: el.IP, Port: el.Port}] = true
		}
	}
	return e
}

func (e *evaluation) name(uid uint32) string {
	if e.o.UserName != nil {
		return e.o.UserName(uid)
	}
	return fmt.Sprint(uid)
}

// principals are the UIDs to judge, in order.
func (e *evaluation) principals() []uint32 {
	seen := map[uint32]bool{}
	add := func(uid uint32) {
		if uid != store.NoUID {
			seen[uid] = true
		}
	}
	for uid := range e.flows {
		add(uid)
	}
	for uid := range e.observed {
		add(uid)
	}
	for _, u := range append(slices.Clone(e.r.EnforceUIDs), e.r.AuditUIDs...) {
		add(u)
	}
	if e.in.Jobs != nil {
		for _, j := range e.in.Jobs.Jobs {
			if j.Counted && j.UID != nil {
				add(*j.UID)
			}
		}
	}
	out := make([]uint32, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// judge gathers the reasons that keep uid in audit; an enforced one has
// none to give.
func (e *evaluation) judge(uid uint32, common []Reason) Principal {
	p := Principal{Kind: "user", UID: uid, Name: e.name(uid), State: e.r.Staging.stateOf(uid), Reasons: []Reason{}}
	for _, f := range e.flows[uid] {
		p.Flows++
		if p.LastNew == nil || f.FirstSeen.After(*p.LastNew) {
			at := f.FirstSeen
			p.LastNew = &at
		}
	}
	if p.State == StateEnforced {
		return p
	}
	p.Reasons = append(p.Reasons, common...)
	p.Reasons = append(p.Reasons, e.flowReasons(uid)...)
	p.Reasons = append(p.Reasons, e.observedReasons(uid)...)
	p.Reasons = append(p.Reasons, e.jobReasons(uid)...)
	p.Ready = len(p.Reasons) == 0
	return p
}

// stagingOf is who p enforces.
func stagingOf(p *plan.Plan) Staging {
	return Staging{Mode: p.Mode, EnforceUIDs: slices.Clone(p.EnforceUIDs), AuditUIDs: slices.Clone(p.AuditUIDs)}
}

// stateOf says whether the staging enforces uid.
func (s Staging) stateOf(uid uint32) string {
	switch s.Mode {
	case plan.ModeEnforce:
		return StateEnforced
	case plan.ModeStaged:
		if slices.Contains(s.EnforceUIDs, uid) || len(s.AuditUIDs) > 0 && !slices.Contains(s.AuditUIDs, uid) {
			return StateEnforced
		}
	}
	return StateAudited
}

// promote is the staging that enforces ready too: the enforced users grow,
// or the audited ones shrink (none left: everyone is enforced).
func (s Staging) promote(ready []uint32) Staging {
	if len(s.AuditUIDs) > 0 {
		left := slices.DeleteFunc(slices.Clone(s.AuditUIDs), func(u uint32) bool { return slices.Contains(ready, u) })
		if len(left) == 0 {
			return Staging{Mode: plan.ModeEnforce}
		}
		return Staging{Mode: plan.ModeStaged, AuditUIDs: left}
	}
	enforce := slices.Sorted(slices.Values(append(slices.Clone(s.EnforceUIDs), ready...)))
	return Staging{Mode: plan.ModeStaged, EnforceUIDs: slices.Compact(enforce)}
}

// Next is the plan --apply installs: the current generation's allow-list
// with the ready principals enforced too.
func Next(r *Report, current *plan.Plan) (*plan.Plan, error) {
	if r.Next == nil {
		return nil, fmt.Errorf("no principal is ready: nothing to promote")
	}
	// Promotion is by user: restaging a table staged by service by user
	// would audit what the services' staging enforced.
	if svcs := current.StagedServices(); len(svcs) > 0 {
		return nil, fmt.Errorf("the current table stages by service (%s): promote --apply stages by user and would replace it; apply the next staging by service yourself", strings.Join(svcs, ", "))
	}
	return plan.Restage(current, plan.ModeEnforce, r.Next.EnforceUIDs, r.Next.AuditUIDs)
}
