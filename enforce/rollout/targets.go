//go:build linux

package rollout

import (
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/store"
)

// Elsewhere lists the targets other than t that hold generations of
// table, newest first.
func Elsewhere(st *store.Store, t nft.Target, table string) ([]store.TargetGenerations, error) {
	gens, err := st.Generations()
	if err != nil {
		return nil, err
	}
	var out []store.TargetGenerations
	for _, g := range store.GenerationTargets(gens, table) {
		if g.Target != targetKey(t) {
			out = append(out, g)
		}
	}
	return out, nil
}
