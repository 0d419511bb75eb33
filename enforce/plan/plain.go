package plan

import (
	"cmp"
	"slices"

	"github.com/egresskit/egress/store"
)

// An apply that re-reads an export changed in a few flows need not make
// the elements of the others again: a plain flow (Plainer.Element) adds
// one element to an allow set and touches nothing else of the plan, so its
// element made once can be kept, and BuildWith of the other flows and the
// kept elements makes the plan Build makes of all the flows.

// Plain holds what plain flows add to a plan: their elements, by family,
// each in key order, and their name rules (in any order).
type Plain struct {
	N      int // how many plain flows
	V4, V6 []Element
	Rules  []NameRule
	// SortedRules, with RulesSorted, are the rules in the order Build
	// sorts name rules in (instead of Rules).
	SortedRules []NameRule
	RulesSorted bool
}

// Plainer tells plain flows and makes their elements, as Build would with
// options o.
type Plainer struct {
	o Options
	b *builder
}

// NewPlainer is the Plainer of options o.
func NewPlainer(o Options) *Plainer {
	o.defaults()
	p := &Plainer{o: o}
	p.b = newBuilder(&p.o)
	return p
}

// Is reports whether flow f is plain: a flow of one host's baseline
// (Options.Hosts unset) that Build neither leaves out (nor could at
// another time: no Options.Since), nor covers by the loopback rule, nor
// adds as an NTP server (UDP 123), nor puts in a service's set (match
// user). All it adds to the plan is one to Plan.Flows, its element (see
// HasElement) and the name rules of its Followed names.
func (p *Plainer) Is(f *store.Flow) bool {
	o := &p.o
	return o.Hosts == nil && o.Since == 0 && o.Match == MatchUser &&
		!f.IP.IsLoopback() && (f.Proto != ProtoUDP || f.Port != 123) && p.b.skip(f) == ""
}

// Followed are the names of plain flow f that the plan follows.
func (p *Plainer) Followed(f *store.Flow) []string {
	if p.o.Follow == nil {
		return nil
	}
	var out []string
	for _, n := range f.Hostnames {
		if p.b.followsName(n) {
			out = append(out, n)
		}
	}
	return out
}

// HasElement reports whether a plain flow that follows these names has
// an element: not when its names stand for its addresses (follow_mode
// name).
func (p *Plainer) HasElement(followed []string) bool {
	return len(followed) == 0 || p.o.Follow.Mode != FollowName
}

// Element is the element Build makes of plain flow f.
func (p *Plainer) Element(f *store.Flow) Element { return p.b.element(f, p.o.AllHosts) }

// Rules appends the name rules of the followed names of the flow of key
// k to rules.
func Rules(rules []NameRule, k store.FlowKey, followed []string) []NameRule {
	for _, n := range followed {
		rules = append(rules, learnedRule(k, n))
	}
	return rules
}

// mergeElements is the elements of a and b in key order (b, when not
// empty, is taken over).
func mergeElements(a, b []Element) []Element {
	byKey := compareElements
	sortFunc := func(x, y Element) int { return byKey(&x, &y) }
	if !sortedElements(a) { // flows in key order make sorted sets
		slices.SortFunc(a, sortFunc)
	}
	if len(b) == 0 {
		return a
	}
	if !sortedElements(b) {
		slices.SortFunc(b, sortFunc)
	}
	if len(a) == 0 {
		return b
	}
	return mergeSorted(a, b, byKey)
}

// compareElements orders elements by key, as store.FlowKey.Compare
// orders their flows (TestCompareElementsAsFlowKeys). It is written out
// rather than x.flowKey().Compare(y.flowKey()): that call is not inlined,
// and plans sort and merge 100k-1M elements 1.5-2x slower through it.
func compareElements(x, y *Element) int {
	switch {
	case x.UID != y.UID:
		return cmp.Compare(x.UID, y.UID)
	case x.IP != y.IP:
		return x.IP.Compare(y.IP)
	case x.Proto != y.Proto:
		return cmp.Compare(x.Proto, y.Proto)
	}
	return cmp.Compare(x.Port, y.Port)
}

// sortedElements reports whether l is in key order.
func sortedElements(l []Element) bool {
	for i := 1; i < len(l); i++ {
		if compareElements(&l[i-1], &l[i]) > 0 {
			return false
		}
	}
	return true
}

// mergeRules is the rules of a and b, each sorted, in their order
// (sortNameRules'); one of them when the other is empty.
func mergeRules(a, b []NameRule) []NameRule {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	return mergeSorted(a, b, func(x, y *NameRule) int { return compareNameRules(*x, *y) })
}

// mergeSorted is the items of a and b, each in the order of compare, in
// that order (a's first among equal ones).
func mergeSorted[T any](a, b []T, compare func(x, y *T) int) []T {
	out := make([]T, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if compare(&a[i], &b[j]) <= 0 {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// CompareRules orders name rules as a plan does.
func CompareRules(a, b NameRule) int { return compareNameRules(a, b) }

// SortRules sorts name rules as a plan does (learned rules in flow order
// are sorted on two cores).
func SortRules(rules []NameRule) { sortNameRules(rules) }
