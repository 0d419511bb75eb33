//go:build linux

package follow

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestFollowerStartsOnLargePlan: the follower starts on a generation of
// 100,000 learned flows that all carry a name (100,000 name rules); its
// kernel maps are sized from the plan.
func TestFollowerStartsOnLargePlan(t *testing.T) {
	lab.Require(t, "nft")
	const n = 100000
	ns, cg := lab.NewNetns(t), lab.NewCgroup(t)
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	flows := make([]store.Flow, n)
	for i := range flows {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 0x0b000000+uint32(i))
		flows[i] = store.Flow{FlowKey: store.FlowKey{UID: 1000 + uint32(i%40), Proto: plan.ProtoTCP, IP: netip.AddrFrom4(a), Port: 443},
			Hits: 1, FirstSeen: now, LastSeen: now, Hostnames: []string{fmt.Sprintf("h%d.r%d.example.net", i, i%20)}}
	}
	target := nft.Target{Netns: ns.Name}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeAudit, DNSServers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)},
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth}})
	if len(p.Follow.Rules) != n {
		t.Fatalf("%d name rules, want %d", len(p.Follow.Rules), n)
	}
	if _, _, err := rollout.Apply(nft.Open(target), p, rollout.Options{Store: st}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f, err := Start(Config{Cgroup: cg.Path, Target: target, Table: plan.DefaultTable, Store: st,
		Resolvers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, PinRoot: lab.NewBPFFS(t)})
	if err != nil {
		t.Fatalf("the follower does not start on %d name rules: %v", n, err)
	}
	took := time.Since(start)
	defer f.Close()
	if s := f.Stats(); s.Rules != n {
		t.Errorf("the follower follows %d rules, want %d", s.Rules, n)
	}
	t.Logf("the follower started on %d name rules in %s", n, took.Round(time.Millisecond))
}
