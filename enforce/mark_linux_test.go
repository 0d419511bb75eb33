//go:build linux

package enforce

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestFollowMarkInUse: apply and the follower refuse a follow mark bit
// that another table or a routing rule of the namespace uses, and accept
// one that others leave alone.
func TestFollowMarkInUse(t *testing.T) {
	lab.Require(t, "nft", "ip")
	ns := lab.NewNetns(t)
	target := Target{Netns: ns.Name}
	nft := func(script string) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "other.nft")
		if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-f", file)
	}
	if err := CheckMarkUnused(target, DefaultTable, DefaultFollowMark); err != nil {
		t.Fatalf("an empty namespace: %v", err)
	}
	// Other software's marks that leave bit 0x10000000 alone.
	nft(`table ip other {
	chain out {
		type filter hook output priority mangle; policy accept;
		meta mark & 0x0000ff00 == 0x00000100 counter
		meta mark 0x00004000 counter
		meta mark set meta mark | 0x00004000
	}
}`)
	lab.MustRun(t, "ip", "-n", ns.Name, "rule", "add", "fwmark", "0xca6c", "table", "51820")
	lab.MustRun(t, "ip", "-n", ns.Name, "rule", "add", "fwmark", "0x80000/0xff0000", "table", "52")
	if err := CheckMarkUnused(target, DefaultTable, DefaultFollowMark); err != nil {
		t.Errorf("marks that leave the bit alone: %v", err)
	}
	for _, c := range []struct{ rule, want string }{
		{"meta mark & 0x10000000 == 0x10000000 counter", "matches the mark"},
		{"meta mark 0 counter", "matches the mark"},
		{"meta mark set 0x1", "sets the mark"},
		{"ct mark set meta mark", "matches the mark"},
	} {
		nft("table inet user {\n\tchain out {\n\t\ttype filter hook output priority 0;\n\t\t" + c.rule + "\n\t}\n}\n")
		err := CheckMarkUnused(target, DefaultTable, DefaultFollowMark)
		if !errors.Is(err, ErrMarkInUse) || !strings.Contains(err.Error(), "table inet user chain out") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v", c.rule, err)
		}
		nft("delete table inet user\n")
	}
	lab.MustRun(t, "ip", "-n", ns.Name, "rule", "add", "fwmark", "0x10000000/0x10000000", "table", "100")
	if err := CheckMarkUnused(target, DefaultTable, DefaultFollowMark); !errors.Is(err, ErrMarkInUse) || !strings.Contains(err.Error(), "routing rule") {
		t.Errorf("a routing rule on the bit: %v", err)
	}
	if err := CheckMarkUnused(target, DefaultTable, 0x20000000); err != nil {
		t.Errorf("another bit: %v", err)
	}

	// The follower refuses to start on it.
	st, err := store.Create(filepath.Join(t.TempDir(), "baseline.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	flows := []store.Flow{pflow(1000, ProtoTCP, "192.0.2.1", 443, 3, time.Now(), "api.example.com")}
	p := Build(flows, Options{Mode: ModeAudit, Follow: &FollowOptions{Mode: FollowBoth}})
	if err := CheckPlanMark(p, target); !errors.Is(err, ErrMarkInUse) {
		t.Errorf("the plan's mark: %v", err)
	}
	if _, _, err := ApplyGeneration(p, target, RolloutOptions{Store: st}); err != nil {
		t.Fatal(err)
	}
	_, err = StartFollower(FollowConfig{Cgroup: lab.NewCgroup(t).Path, Target: target, Table: DefaultTable, Store: st,
		Resolvers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, PinRoot: lab.NewBPFFS(t)})
	if !errors.Is(err, ErrMarkInUse) {
		t.Errorf("the follower started with its mark in use: %v", err)
	}
}
