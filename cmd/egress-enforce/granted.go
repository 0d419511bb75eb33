package main

import (
	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

// grantedNow is what the current generation of e's target allows of the
// approved flows, when it and opts match by service (baseline.Granted);
// nil otherwise.
func grantedNow(st *store.Store, e *env, opts plan.Options) (baseline.Granted, error) {
	match, err := plan.ParseMatch(opts.Match)
	if err != nil || (match != plan.MatchService && match != plan.MatchUserService) {
		return nil, err
	}
	g, err := rollout.Current(st, e.target, e.Cfg.Table)
	if err != nil || g == nil || g.Mode == rollout.ModeRemoved {
		return nil, err
	}
	p, err := rollout.LoadPlan(st, g.Effective())
	if err != nil {
		return nil, err
	}
	return baseline.GrantedBy(p, match), nil
}
