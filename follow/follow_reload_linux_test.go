//go:build linux

package follow

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestFollowerReloadsOnlyANewGeneration (issue 10, item 7): the follower
// used to decode the whole plan every 2 s. It checks the store for a new
// generation often (every 10 ms here) and reads a plan only when the
// generation changed, and once the kernel has its table: once at start,
// not while an apply is in progress (that generation has no plan yet; the
// follower warned at every check then), not for a failed apply, once for
// generation 3, and not at the checks in between.
func TestFollowerReloadsOnlyANewGeneration(t *testing.T) {
	lab.Require(t, "nft")
	ns, cg := lab.NewNetns(t), lab.NewCgroup(t)
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	target := nft.Target{Netns: ns.Name}
	apply := func(n int) {
		t.Helper()
		now := time.Now()
		flows := make([]store.Flow, n)
		for i := range flows {
			flows[i] = store.Flow{FlowKey: store.FlowKey{UID: 1000, Proto: plan.ProtoTCP, IP: netip.AddrFrom4([4]byte{11, 0, 0, byte(i + 1)}), Port: 443},
				Hits: 1, FirstSeen: now, LastSeen: now, Hostnames: []string{fmt.Sprintf("h%d.example.net", i)}}
		}
		p := plan.Build(flows, plan.Options{Mode: plan.ModeAudit, DNSServers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)},
			Follow: &plan.FollowOptions{Mode: plan.FollowBoth}})
		if _, _, err := rollout.Apply(nft.Open(target), p, rollout.Options{Store: st}); err != nil {
			t.Fatal(err)
		}
	}
	apply(2)
	var log lab.Buffer
	f, err := Start(Config{Cgroup: cg.Path, Target: target, Table: plan.DefaultTable, Store: st, Reload: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&log, nil)), GateRefresh: 5 * time.Millisecond, Resolvers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, PinRoot: lab.NewBPFFS(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		_ = f.Close()
	})
	checksAfter := func(n uint64) {
		t.Helper()
		from := f.checks.Load()
		lab.Await(t, fmt.Sprintf("%d checks for a new generation", n), func() bool { return f.checks.Load() >= from+n })
	}

	checksAfter(20)
	if s := f.Stats(); s.Generation != 1 || s.Rules != 2 || f.planReads.Load() != 1 {
		t.Errorf("generation 1: following generation %d, %d rules; %d plans read, want 1 (at start)", s.Generation, s.Rules, f.planReads.Load())
	}
	// An apply in progress: its generation is recorded, its plan not
	// yet (it goes in with the kernel's answer), and it may still fail.
	// The follower stays on the table in the kernel, and reads nothing.
	applying, err := st.AddGeneration(store.Generation{Target: target.Path(), Table: plan.DefaultTable, Mode: string(plan.ModeAudit),
		State: store.GenApplying}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checksAfter(20)
	if _, err := st.UpdateGeneration(applying.N, func(g *store.Generation) error { g.State = store.GenFailed; return nil }); err != nil {
		t.Fatal(err)
	}
	checksAfter(20)
	if s := f.Stats(); s.Generation != 1 || f.planReads.Load() != 1 {
		t.Errorf("during and after a failed apply: following generation %d; %d plans read, want 1", s.Generation, f.planReads.Load())
	}

	apply(3)
	lab.Await(t, "the follower to follow generation 3", func() bool { s := f.Stats(); return s.Generation == 3 && s.Rules == 3 })
	checksAfter(20)
	if n := f.planReads.Load(); n != 2 {
		t.Errorf("%d plans read over %d checks, want 2 (at start, and once for generation 3)", n, f.checks.Load())
	}
	if strings.Contains(log.String(), "level=WARN") || strings.Contains(log.String(), "level=ERROR") {
		t.Errorf("the follower's log:\n%s", log.String())
	}
}
