//go:build linux

package promote

import (
	"fmt"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

// Gather reads from the store what Evaluate judges for the table in the
// target over the period (since, now]: the baseline's flows, the
// monitor's observations, runs and per-minute counts, the generations
// and the current one's plan. The scheduled jobs are the caller's.
// resolvers are dns_resolver_users, whose lookups name a destination its
// user resolved nothing for (store.NamesFor).
func Gather(st *store.Store, t nft.Target, table string, since, now time.Time, resolvers []uint32) (Input, error) {
	var in Input
	gens, cur, err := rollout.History(st, t, table)
	if err != nil {
		return in, err
	}
	in.Generations = gens
	for i := range gens {
		if gens[i].N == cur {
			in.Current = &gens[i]
		}
	}
	if in.Current != nil {
		if in.Current.Mode == rollout.ModeRemoved {
			return in, fmt.Errorf("generation %d removed table inet %s from %s: apply it in audit mode first (egress-enforce apply --mode audit)", cur, table, t)
		}
		if in.Plan, err = rollout.LoadPlan(st, in.Current.Effective()); err != nil {
			return in, fmt.Errorf("the current generation's plan: %w", err)
		}
	}
	if in.Flows, err = st.Flows(); err != nil {
		return in, err
	}
	if in.Observations, err = st.Observations(); err != nil {
		return in, err
	}
	if in.Watches, err = st.Watches(); err != nil {
		return in, err
	}
	if in.Denials, err = st.Denials(since.Unix()/60, now.Unix()/60); err != nil {
		return in, err
	}
	var keys []store.FlowKey
	for _, ob := range in.Observations {
		if !ob.LastSeen.Before(since) {
			keys = append(keys, ob.FlowKey)
		}
	}
	in.Names, err = st.FlowNames(keys, resolvers)
	return in, err
}
