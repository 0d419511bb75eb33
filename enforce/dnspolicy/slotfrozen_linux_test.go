//go:build linux

package dnspolicy

import (
	"strings"
	"testing"

	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// TestFrozenSlotSaysBothPoliciesRun: the follower's slot refuses the new
// policy and then refuses to be emptied. The kernel's refusals are real:
// the slot's program array is frozen (BPF_MAP_FREEZE), so the system
// calls that update and delete its entries fail. Install attaches the new
// policy as a program of its own, cannot take the old one out of the
// slot, and must fail saying both check the queries (never report the
// new policy as the one that runs). Both checking is the stricter state:
// bob's name, which only the new policy allows, stays stopped by the old
// one.
func TestFrozenSlotSaysBothPoliciesRun(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	e.startFollower()
	e.wantVia(ViaFollower)

	cg, err := cgroupbpf.ID(e.cfg.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	netns, err := netnsCookie(e.cfg.Target)
	if err != nil {
		t.Fatal(err)
	}
	dir := policyDir(e.cfg.PinRoot, e.cfg.Table, netns)
	slot, err := follow.FollowerSlot(dir, cg)
	if err != nil || slot == nil {
		t.Fatalf("the follower's slot: %v %v", slot, err)
	}
	defer slot.Close()
	if err := slot.Freeze(); err != nil {
		t.Fatalf("freeze the follower's slot: %v", err)
	}

	entries, _ := Dedup(append(learned, Entry{UID: bob, Name: "www.example.lab", Source: "learned"}))
	_, err = Install(e.cfg, entries)
	if err == nil || !strings.Contains(err.Error(), "both check the queries") {
		t.Fatalf("install beside a slot that cannot be emptied: %v, want an error saying both policies check the queries", err)
	}
	old, err := follow.SlotProgram(slot)
	if err != nil {
		t.Fatal(err)
	}
	if old == nil {
		t.Fatal("the slot is empty: the error says both policies run")
	}
	old.Close()
	if r := Status(e.cfg); r.Via != ViaBoth || !r.Attached {
		t.Errorf("status: want attached via %q, got %+v", ViaBoth, r)
	}
	if n := e.egressPrograms(); n != 2 {
		t.Errorf("%d programs on the cgroup's egress hook, want 2 (the follower's and the new policy's own)", n)
	}
	e.stoppedDig(bob, "www.example.lab")
	e.stoppedDig(bob, "db.corp.lab")
	if got := e.dig(alice, "www.example.lab"); got != "10.77.0.80" {
		t.Fatalf("alice's learned name, allowed by both: got %q", got)
	}
}
