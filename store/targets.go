package store

import (
	"cmp"
	"slices"
)

// TargetGenerations sums the generations of one table in one target.
// Generations belong to a target (a network namespace): a command run
// for another target does not see them, and says where they are.
type TargetGenerations struct {
	// Target is the network namespace's file ("" for the host's own).
	Target      string `json:"target"`
	Generations int    `json:"generations"`
	// Current is the newest generation that took effect (0: none did).
	Current uint64 `json:"current"`
}

// GenerationTargets sums the generations of table by target, in the
// order of their newest generation, newest first.
func GenerationTargets(gens []Generation, table string) []TargetGenerations {
	by := map[string]*TargetGenerations{}
	newest := map[string]uint64{}
	for _, g := range gens {
		if g.Table != table {
			continue
		}
		t := by[g.Target]
		if t == nil {
			t = &TargetGenerations{Target: g.Target}
			by[g.Target] = t
		}
		t.Generations++
		newest[g.Target] = max(newest[g.Target], g.N)
		if g.State != GenFailed && g.N > t.Current {
			t.Current = g.N
		}
	}
	out := make([]TargetGenerations, 0, len(by))
	for _, t := range by {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b TargetGenerations) int {
		return cmp.Or(cmp.Compare(newest[b.Target], newest[a.Target]), cmp.Compare(a.Target, b.Target))
	})
	return out
}
