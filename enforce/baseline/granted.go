package baseline

import (
	"slices"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// Granted says which parts of approved flows the current generation
// allows, with per-service rules: a flow's key is approved once, but the
// learner keeps adding the cgroups it is seen from, so an approved
// destination seen later from another service (or from outside any
// service) would reach the next table unreviewed. service "" is the
// per-user part (the flow's cgroups that are no service's, or none).
// A nil Granted allows every part (per-user rules, or no generation
// matched by service to compare with).
type Granted func(service string, k store.FlowKey) bool

// GrantedBy is what the plan p (the current generation's) allows: its
// service elements and its per-user ones. Nil unless p matches by
// service as match does: with another match there is nothing to compare.
func GrantedBy(p *plan.Plan, match string) Granted {
	if p == nil || !p.ByService() || p.Match != match {
		return nil
	}
	have := map[grant]bool{}
	for _, s := range p.Sets {
		for _, e := range s.Elements {
			have[grantOf(e.Service, store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port}, e.AnyUser)] = true
		}
	}
	anyUser := p.Match == plan.MatchService
	return func(service string, k store.FlowKey) bool {
		return have[grantOf(service, k, anyUser && service != "")]
	}
}

// grant is an element's key: a service's (any user's, or one user's) or
// a user's flow.
type grant struct {
	service string
	anyUser bool
	key     store.FlowKey
}

func grantOf(service string, k store.FlowKey, anyUser bool) grant {
	if anyUser {
		k.UID = 0
	}
	return grant{service, anyUser, k}
}

// split cuts an approved flow to the parts g allows. added are the
// services g does not allow it for, outside whether its per-user part
// is new; ok is false when nothing of it is allowed (the flow must not
// go into a table: without cgroups it would become a per-user element).
func (g Granted) split(f store.Flow, depth int) (kept store.Flow, added []string, outside, ok bool) {
	if g == nil {
		return f, nil, false, true
	}
	kept = f
	kept.Cgroups = nil
	user := len(f.Cgroups) == 0
	for _, c := range f.Cgroups {
		s := plan.ServiceOf(c, depth)
		switch {
		case s == "":
			user = true
			if g("", f.FlowKey) {
				kept.Cgroups = append(kept.Cgroups, c)
			}
		case g(s, f.FlowKey):
			kept.Cgroups = append(kept.Cgroups, c)
		default:
			if !slices.Contains(added, s) {
				added = append(added, s)
			}
		}
	}
	userOK := g("", f.FlowKey)
	outside = user && !userOK
	ok = len(kept.Cgroups) > 0 || userOK
	return kept, added, outside, ok
}

// SelectGranted is Select, with the approved flows cut to what g allows
// (see Granted): a service seen on an approved destination since waits
// for a reviewed reconcile, as a new destination does.
func SelectGranted(flows []store.Flow, g Granted, depth int) []store.Flow {
	sel := Select(flows)
	if g == nil {
		return sel
	}
	out := make([]store.Flow, 0, len(sel))
	for _, f := range sel {
		if f.Approved == 0 {
			out = append(out, f) // nothing approved yet: every flow
			continue
		}
		if kept, _, _, ok := g.split(f, depth); ok {
			out = append(out, kept)
		}
	}
	return out
}
