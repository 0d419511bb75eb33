//go:build linux

package nft_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestFollowMarkInUse: apply and the follower refuse a follow mark bit
// that another table or a routing rule of the namespace uses, and accept
// one that others leave alone.
func TestFollowMarkInUse(t *testing.T) {
	lab.Require(t, "nft", "ip")
	ns := lab.NewNetns(t)
	target := nft.Target{Netns: ns.Name}
	load := func(script string) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "other.nft")
		if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-f", file)
	}
	if err := nft.Open(target).CheckMarkUnused(plan.DefaultTable, plan.DefaultFollowMark); err != nil {
		t.Fatalf("an empty namespace: %v", err)
	}
	// Other software's marks that leave bit 0x10000000 alone.
	load(`table ip other {
	chain out {
		type filter hook output priority mangle; policy accept;
		meta mark & 0x0000ff00 == 0x00000100 counter
		meta mark 0x00004000 counter
		meta mark set meta mark | 0x00004000
	}
}`)
	lab.MustRun(t, "ip", "-n", ns.Name, "rule", "add", "fwmark", "0xca6c", "table", "51820")
	lab.MustRun(t, "ip", "-n", ns.Name, "rule", "add", "fwmark", "0x80000/0xff0000", "table", "52")
	if err := nft.Open(target).CheckMarkUnused(plan.DefaultTable, plan.DefaultFollowMark); err != nil {
		t.Errorf("marks that leave the bit alone: %v", err)
	}
	for _, c := range []struct{ rule, want string }{
		{"meta mark & 0x10000000 == 0x10000000 counter", "matches the mark"},
		{"meta mark 0 counter", "matches the mark"},
		{"meta mark set 0x1", "sets the mark"},
		{"ct mark set meta mark", "matches the mark"},
	} {
		load("table inet user {\n\tchain out {\n\t\ttype filter hook output priority 0;\n\t\t" + c.rule + "\n\t}\n}\n")
		err := nft.Open(target).CheckMarkUnused(plan.DefaultTable, plan.DefaultFollowMark)
		if !errors.Is(err, nft.ErrMarkInUse) || !strings.Contains(err.Error(), "table inet user chain out") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v", c.rule, err)
		}
		load("delete table inet user\n")
	}
	lab.MustRun(t, "ip", "-n", ns.Name, "rule", "add", "fwmark", "0x10000000/0x10000000", "table", "100")
	if err := nft.Open(target).CheckMarkUnused(plan.DefaultTable, plan.DefaultFollowMark); !errors.Is(err, nft.ErrMarkInUse) || !strings.Contains(err.Error(), "routing rule") {
		t.Errorf("a routing rule on the bit: %v", err)
	}
	if err := nft.Open(target).CheckMarkUnused(plan.DefaultTable, 0x20000000); err != nil {
		t.Errorf("another bit: %v", err)
	}

	// The follower refuses to start on it.
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	flows := []store.Flow{plantest.Flow(1000, plan.ProtoTCP, "192.0.2.1", 443, 3, time.Now(), "api.example.com")}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeAudit, Follow: &plan.FollowOptions{Mode: plan.FollowBoth}})
	if err := nft.Open(target).CheckPlanMark(p); !errors.Is(err, nft.ErrMarkInUse) {
		t.Errorf("the plan's mark: %v", err)
	}
	if _, _, err := rollout.Apply(nft.Open(target), p, rollout.Options{Store: st}); err != nil {
		t.Fatal(err)
	}
	_, err = follow.Start(follow.Config{Cgroup: lab.NewCgroup(t).Path, Target: target, Table: plan.DefaultTable, Store: st,
		Resolvers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, PinRoot: lab.NewBPFFS(t)})
	if !errors.Is(err, nft.ErrMarkInUse) {
		t.Errorf("the follower started with its mark in use: %v", err)
	}
}
