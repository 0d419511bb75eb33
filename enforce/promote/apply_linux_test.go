//go:build linux

package promote

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeHost is a store whose table went in (audit) on a fake kernel, and a
// clock a week and a day later: the monitor recorded all along, and bob's
// packet to 10.0.0.9:8081 was audited an hour ago.
type fakeHost struct {
	st    *store.Store
	k     *nft.Fake
	audit *plan.Plan
	now   time.Time
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHost{st: st, k: nft.NewFake(nft.Target{Netns: "fake"}), now: time.Now().Add(8 * 24 * time.Hour)}
	flows := []store.Flow{flow(alice, "10.0.0.1", 443, long, false), flow(bob, "10.0.0.2", 443, long, false)}
	for i := range flows {
		flows[i].LastSeen = long
	}
	if err := st.Apply(&store.Batch{Flows: flows}); err != nil {
		t.Fatal(err)
	}
	h.audit = plan.Build(flows, plan.Options{Mode: plan.ModeAudit, DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")}})
	if _, _, err := rollout.Apply(h.k, h.audit, rollout.Options{Store: st, Command: "apply --mode audit", Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	w := &store.Watch{Start: time.Now().Add(-time.Minute), End: h.now.Add(-10 * time.Second), Target: h.k.Target().Path(),
		Group: plan.DefaultNFLOGGroup, Counters: true}
	at := h.now.Add(-time.Hour)
	if _, err := st.RecordObservations(&store.ObservationBatch{Watch: w,
		Observations: []store.Observation{{Kind: store.ObsAudit, FlowKey: key(bob, "10.0.0.9", 8081), Hits: 2, FirstSeen: at, LastSeen: at}},
		Minutes:      map[int64]store.DenialCount{at.Unix() / 60: {Audit: 2}}}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *fakeHost) evaluate(t *testing.T) (*Report, Input) {
	t.Helper()
	in, err := Gather(h.st, h.k.Target(), plan.DefaultTable, h.now.Add(-DefaultQuietFor), h.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Jobs = &emptyScan
	r, err := Evaluate(in, Options{Now: h.now, QuietFor: DefaultQuietFor, Target: h.k.Target().Path(), UserName: names})
	if err != nil {
		t.Fatal(err)
	}
	return r, in
}

// TestPromoteOnTheFakeKernel: promotion end to end through rollout's one
// apply path, on nft.Fake: alice (quiet) is promoted, bob (audited) is
// not; the new generation is pending with its guard; the kernel holds
// the same allow-list, enforcing alice only; another promotion waits for
// the confirmation; after it, alice is enforced and bob still audited.
func TestPromoteOnTheFakeKernel(t *testing.T) {
	h := newFakeHost(t)
	r, in := h.evaluate(t)
	if !slices.Equal(r.Ready, []uint32{alice}) || principal(t, r, bob).Ready {
		t.Fatalf("ready %v: %+v", r.Ready, r.Principals)
	}
	next, err := Next(r, in.Plan)
	if err != nil {
		t.Fatal(err)
	}
	guards := 0
	opts := rollout.Options{Store: h.st, Command: "promote --apply", ConfirmWithin: time.Hour, Logger: quiet,
		StartGuard: func(uint64) (int, error) { guards++; return 1 << 30, nil }}
	g, _, err := rollout.Apply(h.k, next, opts)
	if err != nil || g.State != store.GenPending || !slices.Equal(g.EnforceUIDs, []uint32{alice}) || g.RollbackTo != 1 || guards != 1 {
		t.Fatalf("apply: %+v, %v (%d guards)", g, err, guards)
	}
	st, err := h.k.Status(plan.DefaultTable, true)
	if err != nil || st.Mode != plan.ModeStaged || !slices.Equal(st.EnforceUIDs, []uint32{alice}) || st.Policy != "accept" {
		t.Fatalf("kernel: %+v, %v", st, err)
	}
	if got := h.k.Plan(plan.DefaultTable); plantest.JSON(t, got.Sets) != plantest.JSON(t, h.audit.Sets) {
		t.Errorf("the allow-list changed:\n%s", h.k.Dump())
	}
	r, in = h.evaluate(t)
	if principal(t, r, alice).State != StateEnforced || principal(t, r, bob).State != StateAudited || r.Next != nil {
		t.Errorf("after the promotion: %+v, next %+v", r.Principals, r.Next)
	}
	again, _ := plan.Restage(in.Plan, plan.ModeEnforce, []uint32{alice, bob}, nil)
	if _, _, err := rollout.Apply(h.k, again, opts); !errors.Is(err, rollout.ErrPending) {
		t.Errorf("apply while pending: %v", err)
	}
	if _, err := rollout.Confirm(h.st, h.k.Target(), plan.DefaultTable); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.k.Status(plan.DefaultTable, false); !slices.Equal(st.EnforceUIDs, []uint32{alice}) {
		t.Errorf("after confirm: %+v", st)
	}
}

// TestGatherRefusesARemovedTable: a removal is the current generation:
// there is nothing to promote in.
func TestGatherRefusesARemovedTable(t *testing.T) {
	h := newFakeHost(t)
	if _, _, err := rollout.Remove(h.st, h.k, plan.DefaultTable, rollout.Options{Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	_, err := Gather(h.st, h.k.Target(), plan.DefaultTable, h.now.Add(-time.Hour), h.now, nil)
	if err == nil || !contains(err.Error(), "removed table inet egress", "apply --mode audit") {
		t.Errorf("gather: %v", err)
	}
}

func contains(s string, want ...string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}
