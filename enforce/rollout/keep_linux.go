//go:build linux

package rollout

import "github.com/egresskit/egress/store"

// PlansToKeep names the generations whose plans must outlive
// keep_generations (store.PruneOptions.KeepPlans): for each target and
// table, the plan the current generation installed, the plan a restore
// puts back (the newest kept generation's), the plan a default rollback
// puts back, and the plan every generation still pending (or applying)
// would be rolled back to.
func PlansToKeep(gens []store.Generation) []uint64 {
	var keep []uint64
	effective := func(n uint64) {
		if g := find(gens, n); g != nil {
			keep = append(keep, g.Effective())
		}
	}
	done := map[[2]string]bool{}
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if pendingish(g) && g.RollbackTo != 0 {
			effective(g.RollbackTo)
		}
		k := [2]string{g.Target, g.Table}
		if done[k] {
			continue
		}
		done[k] = true
		if k := kept(gens, g.Target, g.Table, 0); k != nil {
			keep = append(keep, k.Effective())
		}
		cur := current(gens, g.Target, g.Table)
		if cur == nil {
			continue
		}
		keep = append(keep, cur.Effective())
		if to := defaultBack(gens, cur); to != 0 {
			effective(to)
		}
	}
	return keep
}
