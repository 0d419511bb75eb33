//go:build linux

// Package nclab runs a name check (namecheck.Run) for a test: the tests
// of the name check and of the follower, which share its pinned maps,
// start one the same way. It is for external test packages only
// (package follow's own tests cannot import it: namecheck imports follow).
package nclab

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
	"github.com/egresskit/egress/store"
)

// Host is what a name check and a follower of the default table need: a
// network namespace (the enforced one; no table in it), a cgroup, a bpf
// file system for the pins and an empty store.
type Host struct {
	Cgroup *lab.Cgroup
	Pins   string
	Store  *store.Store
	Target nft.Target
}

// NewHost makes a Host, removed when the test ends.
func NewHost(t *testing.T) *Host {
	t.Helper()
	lab.Require(t)
	h := &Host{Target: nft.Target{Netns: lab.NewNetns(t).Name}, Cgroup: lab.NewCgroup(t), Pins: lab.NewBPFFS(t)}
	var err error
	if h.Store, err = store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	return h
}

// NameCheck is the configuration of h's name check, pinned.
func (h *Host) NameCheck() namecheck.RunConfig {
	return namecheck.RunConfig{Cgroup: h.Cgroup.Path, Target: h.Target, Table: plan.DefaultTable, Store: h.Store, PinRoot: h.Pins}
}

// Follower is the configuration of h's follower.
func (h *Host) Follower() follow.Config {
	return follow.Config{Cgroup: h.Cgroup.Path, Target: h.Target, Table: plan.DefaultTable, Store: h.Store, Window: time.Second, PinRoot: h.Pins}
}

// FollowedPin is where h's follower pins its map of followed destinations.
func (h *Host) FollowedPin(t *testing.T) string {
	t.Helper()
	netns, err := follow.EnforcedNetns(h.Target)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(follow.PinPath(h.Pins, plan.DefaultTable, netns), follow.PinFollowed)
}

// Start runs namecheck.Run with cfg (its Ready is set here) and returns
// once the check is attached with its destinations set. stop ends it (a
// clean stop: the check is detached and unpinned) and fails the test on
// an error of Run; it runs at the end of the test if not before.
func Start(t *testing.T, cfg namecheck.RunConfig) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	cfg.Ready = ready
	go func() { done <- namecheck.Run(ctx, cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("name check: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case err := <-done:
		stopped = true
		cancel()
		t.Fatalf("name check: %v", err)
	case <-time.After(lab.Patience):
		t.Fatalf("the name check did not start within %v", lab.Patience)
	}
	return stop
}
