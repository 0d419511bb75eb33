//go:build linux

package rollout

import (
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// rig is a store and a fake kernel: rollout runs on it as on the real
// one, without root.
type rig struct {
	t  *testing.T
	k  *nft.Fake
	st *store.Store
	db string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	db := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, k: nft.NewFake(nft.Target{}), st: st, db: db}
}

// quiet logs nothing.
var quiet = slog.New(slog.DiscardHandler)

// planOf builds a table allowing uid 1000 to 192.0.2.1 on each port, with
// a DNS server (so that it passes the pre-apply check).
func planOf(mode plan.Mode, ports ...uint16) *plan.Plan {
	var flows []store.Flow
	for _, p := range ports {
		flows = append(flows, plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", p, 3, plantest.T0))
	}
	return plan.Build(flows, plan.Options{Mode: mode, Now: plantest.T0, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
}

// apply applies p as a new generation and fails the test on an error.
func (r *rig) apply(p *plan.Plan, o Options) *store.Generation {
	r.t.Helper()
	o.Store, o.Logger = r.st, quiet
	g, _, err := Apply(r.k, p, o)
	if err != nil {
		r.t.Fatalf("apply: %v", err)
	}
	return g
}

// pending applies p with a confirm window; its guard is a process that
// is not one (this test's): it counts as gone.
func (r *rig) pending(p *plan.Plan) *store.Generation {
	r.t.Helper()
	return r.apply(p, Options{ConfirmWithin: time.Hour, StartGuard: func(uint64) (int, error) { return 1, nil }})
}

// gen reads generation n.
func (r *rig) gen(n uint64) store.Generation {
	r.t.Helper()
	gens, err := r.st.Generations()
	if err != nil {
		r.t.Fatal(err)
	}
	if g := find(gens, n); g != nil {
		return *g
	}
	r.t.Fatalf("no generation %d", n)
	return store.Generation{}
}

// holds says whether the kernel holds exactly p's table.
func (r *rig) holds(p *plan.Plan) bool {
	in := r.k.Plan(p.Table)
	return in != nil && in.String() == p.String()
}

// rejected is an error the fake kernel answers as a refused batch.
var rejected = errors.Join(nft.ErrRejected, errors.New("injected"))
