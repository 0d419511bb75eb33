//go:build linux

package rollout

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// afterPuts is a kernel whose apply starts once every approval is in the
// store's write transaction (or fails the test after a minute).
type afterPuts struct {
	*nft.Fake
	t   *testing.T
	put <-chan struct{}
}

func (k afterPuts) ApplyWith(p *plan.Plan, o nft.ApplyOptions) (*nft.ApplyResult, error) {
	select {
	case <-k.put:
	case <-time.After(time.Minute):
		k.t.Error("the approvals were not written beside the kernel's work")
	}
	return k.Fake.ApplyWith(p, o)
}

// countingApprovals is Options whose Approve approves the flows of p by
// the generation being applied, and closes the channel it returns once
// every one of them is written into the store's transaction.
func countingApprovals(p *plan.Plan) (Options, <-chan struct{}) {
	put := make(chan struct{})
	return Options{Approve: func(n uint64) *store.Approvals {
		var keys []store.FlowKey
		for _, s := range p.Sets {
			for _, e := range s.Elements {
				keys = append(keys, store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port})
			}
		}
		left := len(keys)
		return store.NewApprovals(keys, func(f *store.Flow) {
			f.Approved, f.ApprovedAt = n, plantest.T0
			if left--; left == 0 {
				close(put)
			}
		})
	}}, put
}

// TestApplyNotVerifiedAfterApprovalsWritten: the approvals go into the
// store's write while the kernel works; when the read-back then fails,
// none of them is written: the flows are as they were, only the
// generation is recorded (applied, with why the read-back failed). A
// table the kernel refused after the approvals were written leaves them
// out too.
func TestApplyNotVerifiedAfterApprovalsWritten(t *testing.T) {
	r := newRig(t)
	p := planOf(plan.ModeEnforce, 443, 22)
	learned := []store.Flow{plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, plantest.T0)}
	if err := r.st.Apply(&store.Batch{Flows: learned}); err != nil {
		t.Fatal(err)
	}
	before, err := r.st.Flows()
	if err != nil {
		t.Fatal(err)
	}
	for _, fail := range []error{errors.New("read back: no table"), nft.ErrRejected} {
		o, put := countingApprovals(p)
		o.Store, o.Logger = r.st, quiet
		r.k.Fail(nft.OpApply, fail)
		g, _, err := Apply(afterPuts{Fake: r.k, t: t, put: put}, p, o)
		if err == nil || g == nil {
			t.Fatalf("apply with %v: %+v %v", fail, g, err)
		}
		if errors.Is(fail, nft.ErrRejected) != (g.State == store.GenFailed) || g.Note == "" {
			t.Errorf("apply with %v recorded %s (%q)", fail, g.State, g.Note)
		}
		after, err := r.st.Flows()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(after, before) {
			t.Errorf("apply with %v: flows %+v, want them as they were: %+v", fail, after, before)
		}
	}
	// Verified, the same approvals go in with the generation.
	o, put := countingApprovals(p)
	o.Store, o.Logger = r.st, quiet
	g, _, err := Apply(afterPuts{Fake: r.k, t: t, put: put}, p, o)
	if err != nil || g.State != store.GenApplied {
		t.Fatalf("apply: %+v %v", g, err)
	}
	if got := r.approved(); len(got) != 2 || got[443] != g.N || got[22] != g.N {
		t.Errorf("approved flows by port %v, want 443 and 22 by generation %d", got, g.N)
	}
}
