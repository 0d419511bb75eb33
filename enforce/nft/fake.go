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
	dropped map[string]uint64
	fail    map[string][]error
	calls   map[string]int
}

// NewFake returns an empty kernel for the target.
func NewFake(t Target) *Fake {
	return &Fake{target: t, tables: map[string]*plan.Plan{}, dropped: map[string]uint64{}, fail: map[string][]error{}, calls: map[string]int{}}
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
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.call(OpApply)
	if err != nil && errors.Is(err, ErrRejected) {
		return nil, err
	}
	if terr := p.Text(io.Discard); terr != nil {
		return nil, fmt.Errorf("apply table inet %s in %s: %w: %w", p.Table, f.target, ErrRejected, terr)
	}
	data, jerr := json.Marshal(p)
	if jerr != nil {
		return nil, jerr
	}
	var kept plan.Plan
	if jerr := json.Unmarshal(data, &kept); jerr != nil {
		return nil, jerr
	}
	f.tables[p.Table] = &kept
	f.dropped[p.Table] = 0 // counters restart at each replace
	res := &ApplyResult{Elements: p.Elements(), Rules: len(p.Rules), Verified: err == nil}
	return res, err
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
	st.Present, st.Policy = true, p.Chain.Policy
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
