//go:build linux

package rollout

import (
	"errors"
	"fmt"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// approving is Options whose Approve approves the flows of p by the
// generation being applied.
func approving(p *plan.Plan) Options {
	return Options{Approve: func(n uint64) *store.Approvals {
		var keys []store.FlowKey
		for _, s := range p.Sets {
			for _, e := range s.Elements {
				keys = append(keys, store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port})
			}
		}
		return store.NewApprovals(keys, func(f *store.Flow) { f.Approved, f.ApprovedAt = n, plantest.T0 })
	}}
}

// approved are the store's flows by port, with the generation that
// approved each.
func (r *rig) approved() map[uint16]uint64 {
	r.t.Helper()
	flows, err := r.st.Flows()
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[uint16]uint64{}
	for _, f := range flows {
		out[f.Port] = f.Approved
	}
	return out
}

// TestApplyApprovesWithItsGeneration: the approvals of Options.Approve
// are in the store once the generation is recorded applied, by that
// generation.
func TestApplyApprovesWithItsGeneration(t *testing.T) {
	r := newRig(t)
	p := planOf(plan.ModeEnforce, 443, 22)
	g := r.apply(p, approving(p))
	if g.State != store.GenApplied {
		t.Fatalf("generation %+v", g)
	}
	if got := r.approved(); len(got) != 2 || got[443] != g.N || got[22] != g.N {
		t.Errorf("approved flows by port %v, want 443 and 22 by generation %d", got, g.N)
	}
}

// TestApplyNotVerifiedApprovesNothing: a table the kernel took but whose
// read-back failed is recorded (with why), and its flows are not
// approved; a table the kernel refused approves nothing either.
func TestApplyNotVerifiedApprovesNothing(t *testing.T) {
	r := newRig(t)
	p := planOf(plan.ModeEnforce, 443)
	o := approving(p)
	o.Store, o.Logger = r.st, quiet
	r.k.Fail(nft.OpApply, errors.New("read back: no table"))
	g, _, err := Apply(r.k, p, o)
	if err == nil || g == nil || g.State != store.GenApplied || g.Note == "" {
		t.Fatalf("apply with a failed read-back: %+v %v", g, err)
	}
	if got := r.approved(); len(got) != 0 {
		t.Errorf("a table not verified approved flows %v", got)
	}
	r.k.Fail(nft.OpApply, fmt.Errorf("refused: %w", nft.ErrRejected))
	g, _, err = Apply(r.k, p, o)
	if !errors.Is(err, nft.ErrRejected) || g == nil || g.State != store.GenFailed {
		t.Fatalf("apply refused: %+v %v", g, err)
	}
	if got := r.approved(); len(got) != 0 {
		t.Errorf("a table refused approved flows %v", got)
	}
}
