package nft

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/egresskit/egress/enforce/plan"
)

// Fake is a kernel in memory for tests of what drives one (rollout,
// restore, the rollback guard, reconcile --apply), like knftables' Fake:
// it keeps the table each plan describes, and Dump lists them as nft
// text. A plan that does not render (hostile names, a rule that is not one
// statement) is rejected as the kernel would reject its batch, and any
// call can be made to fail. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	target  Target
	tables  map[string]*plan.Plan
	stamps  map[string]uint64 // the generation each table is stamped with
	deltas  int               // applies done as a delta
	dropped map[string]uint64
	fail    map[string][]error
	calls   map[string]int
}

// NewFake returns an empty kernel for the target.
func NewFake(t Target) *Fake {
	return &Fake{target: t, tables: map[string]*plan.Plan{}, stamps: map[string]uint64{}, dropped: map[string]uint64{}, fail: map[string][]error{}, calls: map[string]int{}}
}

// Kernel operations, for Fail and Calls.
const (
	OpApply  = "apply"
	OpRemove = "remove"
	OpStatus = "status"
)

// Fail makes the next calls of op return errs, one each, in order. An
// apply failing with an error that wraps ErrRejected changes nothing;
// any other error of an apply comes after the table went in (a read-back
// that failed).
func (f *Fake) Fail(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = append(f.fail[op], errs...)
}

// Calls says how often op was called.
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Drop counts packets as dropped by the default rules of table.
func (f *Fake) Drop(table string, packets uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropped[table] += packets
}

// call counts a call of op and returns the error injected for it.
func (f *Fake) call(op string) error {
	f.calls[op]++
	if errs := f.fail[op]; len(errs) > 0 {
		f.fail[op] = errs[1:]
		return errs[0]
	}
	return nil
}

// Target is the network namespace the fake stands for.
func (f *Fake) Target() Target { return f.target }

// Apply replaces the plan's table, as one transaction: a plan that does
// not render is rejected and changes nothing. The kernel keeps a copy.
func (f *Fake) Apply(p *plan.Plan) (*ApplyResult, error) {
	return f.ApplyWith(p, ApplyOptions{})
}

// ApplyWith applies p as Netlink.ApplyWith does: with o.From, as a delta
// when the fake holds o.From's table stamped o.FromGeneration. The fake
// carries the delta's operations out on its copy of the table and checks
// that the result is p's table (a delta that is wrong is an error).
func (f *Fake) ApplyWith(p *plan.Plan, o ApplyOptions) (*ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.call(OpApply)
	if err != nil && errors.Is(err, ErrRejected) {
		return nil, err
	}
	if terr := p.Text(io.Discard); terr != nil {
		return nil, fmt.Errorf("apply table inet %s in %s: %w: %w", p.Table, f.target, ErrRejected, terr)
	}
	reason, differs := "", false
	if o.From != nil {
		res, why, kernel, derr := f.delta(p, o)
		if derr != nil {
			return nil, derr
		}
		if why == "" {
			res.Verified = err == nil
			return res, err
		}
		reason, differs = why, kernel
	}
	if kerr := f.keep(p, o.Generation); kerr != nil {
		return nil, kerr
	}
	res := &ApplyResult{Elements: p.Elements(), Rules: len(p.Rules), Verified: err == nil, FullReason: reason, KernelDiffers: differs}
	return res, err
}

// keep stores a copy of p as the table, stamped gen; the counters restart.
func (f *Fake) keep(p *plan.Plan, gen uint64) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	var kept plan.Plan
	if err := json.Unmarshal(data, &kept); err != nil {
		return err
	}
	f.tables[p.Table], f.stamps[p.Table] = &kept, gen
	f.dropped[p.Table] = 0
	return nil
}

// delta carries out the delta from o.From to p on the fake's table, as the
// kernel would; why says why it did not (kernel: the fake's table is not
// o.From's).
func (f *Fake) delta(p *plan.Plan, o ApplyOptions) (res *ApplyResult, why string, kernel bool, err error) {
	d, why := o.delta(p)
	if why != "" {
		return nil, why, false, nil
	}
	cur := f.tables[o.From.Head.Table]
	switch {
	case cur == nil:
		return nil, "table inet " + o.From.Head.Table + " is not in the kernel", true, nil
	case f.stamps[cur.Table] != o.FromGeneration:
		return nil, "the table in the kernel is generation " + itoa64(f.stamps[cur.Table]) + ", the store says " + itoa64(o.FromGeneration), true, nil
	case !sameIndex(plan.IndexOf(cur), o.From):
		return nil, "the kernel refused the changes (its table is not generation " + itoa64(o.FromGeneration) + "'s)", true, nil
	}
	next := carryOut(cur, d, p)
	if got, want := next.String(), p.String(); got != want {
		return nil, "", false, fmt.Errorf("fake kernel: the delta from generation %d does not make the plan's table:\n%s\nwant\n%s", o.FromGeneration, got, want)
	}
	if err := f.keep(p, o.Generation); err != nil {
		return nil, "", false, err
	}
	f.dropped[p.Table] = 0
	f.deltas++
	return &ApplyResult{Elements: p.Elements(), Rules: len(p.Rules), Delta: deltaResult(d, o.FromGeneration, len(p.Rules))}, "", false, nil
}

// sameIndex reports whether two indexes describe the same table: the same
// elements (keys and hashes), rules and policy.
func sameIndex(a, b *plan.Index) bool {
	if len(a.Sets) != len(b.Sets) || a.Head.Chain.Policy != b.Head.Chain.Policy || len(a.Head.Rules) != len(b.Head.Rules) {
		return false
	}
	for i := range a.Sets {
		if !slices.Equal(a.Sets[i], b.Sets[i]) {
			return false
		}
	}
	for i, r := range a.Head.Rules {
		if r.Comment != b.Head.Rules[i].Comment || r.Text != b.Head.Rules[i].Text {
			return false
		}
	}
	return true
}

// carryOut applies delta d to a copy of table cur as the kernel does: the
// elements deleted then added, the rules between the kept head and tail
// replaced by p's, the policy; the rest (what the stamp checks) as p says.
func carryOut(cur *plan.Plan, d *plan.Delta, p *plan.Plan) *plan.Plan {
	next := *p
	next.Sets = make([]plan.Set, len(cur.Sets))
	for i, s := range cur.Sets {
		gone := map[plan.ElementKey]bool{}
		for _, e := range d.Del[s.Name] {
			gone[plan.KeyOf(&e)] = true
		}
		var elems []plan.Element
		for _, e := range s.Elements {
			if !gone[plan.KeyOf(&e)] {
				elems = append(elems, e)
			}
		}
		elems = append(elems, d.Add[s.Name]...)
		order := map[plan.ElementKey]int{}
		for j := range p.Sets[i].Elements {
			order[plan.KeyOf(&p.Sets[i].Elements[j])] = j
		}
		slices.SortFunc(elems, func(a, b plan.Element) int { return order[plan.KeyOf(&a)] - order[plan.KeyOf(&b)] })
		s.Elements = elems
		next.Sets[i] = s
	}
	rules := slices.Clone(cur.Rules[:d.Head])
	rules = append(rules, p.Rules[d.Head:len(p.Rules)-d.Tail]...)
	next.Rules = append(rules, cur.Rules[len(cur.Rules)-d.Tail:]...)
	next.Chain.Policy = cur.Chain.Policy
	if d.Policy != "" {
		next.Chain.Policy = d.Policy
	}
	return &next
}

// Deltas says how many applies were done as a delta.
func (f *Fake) Deltas() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deltas
}

// Tamper changes the fake's table of name as a hand on the kernel would
// (nft add element, nft delete rule...): its stamp stays.
func (f *Fake) Tamper(table string, fn func(p *plan.Plan)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.tables[table]; p != nil {
		fn(p)
	}
}

// Remove deletes a table; it reports whether there was one.
func (f *Fake) Remove(table string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpRemove); err != nil {
		return false, err
	}
	_, ok := f.tables[table]
	delete(f.tables, table)
	delete(f.stamps, table)
	return ok, nil
}

// Status describes a table as Netlink.Status reads it.
func (f *Fake) Status(table string, elements bool) (*Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpStatus); err != nil {
		return nil, err
	}
	st := &Status{Target: f.target.String(), Table: table, elements: map[string][]plan.Element{}}
	p := f.tables[table]
	if p == nil {
		return st, nil
	}
	st.Present, st.Policy, st.Generation = true, p.Chain.Policy, f.stamps[table]
	for _, s := range p.Sets {
		st.Sets = append(st.Sets, SetStatus{Name: s.Name, Elements: len(s.Elements), Counted: elements})
		if elements {
			st.elements[s.Name] = slices.Clone(s.Elements)
		}
	}
	if p.Follow != nil {
		for _, name := range []string{plan.SetFollow4, plan.SetFollow6, plan.SetFollowGate} {
			st.Sets = append(st.Sets, SetStatus{Name: name, Counted: true})
		}
	}
	for _, u := range p.UserSets {
		if u.Name == plan.SetEnforceUsers {
			st.EnforceUIDs = slices.Sorted(slices.Values(u.UIDs))
		} else {
			st.AuditUIDs = slices.Sorted(slices.Values(u.UIDs))
		}
	}
	for _, ss := range p.ServiceSets {
		if ss.Name == plan.SetEnforceServices {
			st.EnforceServices = slices.Clone(ss.Services)
		} else {
			st.AuditServices = slices.Clone(ss.Services)
		}
	}
	st.readRules(p, f.dropped[table])
	return st, nil
}

// readRules fills the rules and counters as the kernel would count them:
// every drop of the default rules counted in dropped.
func (st *Status) readRules(p *plan.Plan, dropped uint64) {
	var drops, audits int
	for _, r := range p.Rules {
		st.Rules = append(st.Rules, r.Comment)
		if !strings.Contains(r.Text, "counter") {
			continue
		}
		c := ruleCount{cnt: &Counter{}}
		if r.Kind == plan.RuleDefault {
			c.prefix, c.group = plan.PrefixAudit, p.LogGroup()
			c.limited, c.rate = true, uint64(p.AuditRate())
			if r.Action == "drop" {
				c.prefix, c.rate = plan.PrefixDrop, uint64(p.DropLogRate)
				c.cnt.Packets = dropped
				c.limited = p.DropLogRate != 0
				drops++
			} else {
				audits++
			}
			if p.DropLogRate != 0 {
				c.logged = &Counter{}
			}
		}
		st.countRule(r.Comment, c)
	}
	st.Mode = modeOf(drops, audits)
}

// Plan returns a copy of the plan of a table in the kernel (nil: none).
func (f *Fake) Plan(table string) *plan.Plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.tables[table]; p != nil {
		c := *p
		return &c
	}
	return nil
}

// Dump lists the tables in the kernel as nft text, in name order: each
// table's block, without the script's header. "" when there is none.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.tables)) {
		text := f.tables[name].String()
		if i := strings.Index(text, "table inet "+name+" {"); i >= 0 {
			text = text[i:]
		}
		b.WriteString(text)
	}
	return b.String()
}
