//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/store"
)

// The follower case: the small table, with a name rule (so it has its
// follow sets and mark rules), and the follower's eBPF programs attached
// to a child cgroup the sender runs in. Its egress program runs on every
// packet the sender sends: the mark check first (the sender's packets
// carry no mark, so it is one load and one test), then the DNS query
// parse, which leaves at the UDP port. Against the plain small table in
// the same round, this is the per-packet cost of following.

// followPlan is the small plan with a name rule of the sender's.
func (b *bench) followPlan(flows []store.Flow, opts plan.Options) *plan.Plan {
	opts.Follow = &plan.FollowOptions{Mode: plan.FollowIP,
		Names: []plan.NameRule{{UID: b.o.uid, Name: "bench.follow.lab", Proto: plan.ProtoUDP, Port: 9}}}
	return plan.Build(flows, opts)
}

// startFollower makes a child cgroup of the cgroup2 root for the case's
// sender, a bpf file system for the follower's pins, and starts the
// follower for the case's namespace on that cgroup. The cleaner stops it
// and removes both.
func (b *bench) startFollower(c *tableCase) error {
	root, err := cgroupbpf.Mount()
	if err != nil {
		return err
	}
	cg := filepath.Join(root, c.client)
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	b.cl.Add(func() {
		_ = os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0)
		for i := 0; i < 100 && os.Remove(cg) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	fd, err := unix.Open(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	c.cgroupFD = fd
	b.cl.Add(func() { _ = unix.Close(fd) })
	pins, err := os.MkdirTemp("", "enforcebench-bpffs")
	if err != nil {
		return err
	}
	if err := unix.Mount("bpf", pins, "bpf", 0, "mode=0700"); err != nil {
		_ = os.Remove(pins)
		return fmt.Errorf("mount a bpf file system: %w", err)
	}
	b.cl.Add(func() { _ = unix.Unmount(pins, unix.MNT_DETACH); _ = os.Remove(pins) })
	f, err := follow.Start(follow.Config{Cgroup: cg, Target: target(c.client), Table: tableName,
		Resolvers: []netip.Addr{serverIP}, PinRoot: pins})
	if err != nil {
		return fmt.Errorf("start the follower: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	b.cl.Add(func() { cancel(); <-done; _ = f.Close() })
	return nil
}

// roundOrder is the order of the cases in round r: the follower case (the
// fifth) runs next to the plain small table (the second), before it in
// one round and after it in the next, so that their paired ratio compares
// neighbours.
func roundOrder(n, r int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	if n == 5 {
		if r%2 == 1 {
			order = []int{0, 1, 4, 2, 3}
		} else {
			order = []int{0, 4, 1, 2, 3}
		}
	}
	return order
}
