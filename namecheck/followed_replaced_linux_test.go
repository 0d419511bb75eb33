//go:build linux

package namecheck_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
	"github.com/egresskit/egress/store"
)

// TestNameCheckSaysFollowedMapReplaced: when the follower's pinned map
// of followed destinations is no longer the one a running name check
// reads (the pin removed and a follower made a new one, or a follower
// that replaced it), the addresses the follower opens are not
// name-checked: the name check says so loudly, while it keeps checking
// the rest.
func TestNameCheckSaysFollowedMapReplaced(t *testing.T) {
	lab.Require(t)
	ns, cg, pins := lab.NewNetns(t), lab.NewCgroup(t), lab.NewBPFFS(t)
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	target := nft.Target{Netns: ns.Name}
	var logs lab.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- namecheck.Run(ctx, namecheck.RunConfig{Cgroup: cg.Path, Target: target, Table: plan.DefaultTable, Store: st,
			PinRoot: pins, Ready: ready, Reload: 100 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("name check: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("name check: %v", err)
	}
	netns, err := follow.EnforcedNetns(target)
	if err != nil {
		t.Fatal(err)
	}
	followed := filepath.Join(follow.PinPath(pins, plan.DefaultTable, netns), follow.PinFollowed)
	if err := os.Remove(followed); err != nil {
		t.Fatal(err)
	}
	f, err := follow.Start(follow.Config{Cgroup: cg.Path, Target: target, Table: plan.DefaultTable, Store: st, Window: time.Second, PinRoot: pins})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := os.Stat(followed); err != nil {
		t.Fatalf("the follower pinned no followed map: %v", err)
	}
	lab.Await(t, "the name check to say its followed map was replaced", func() bool {
		return strings.Contains(logs.String(), "are NOT name-checked")
	})
	if s := logs.String(); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, followed) {
		t.Errorf("log:\n%s", s)
	}
}
