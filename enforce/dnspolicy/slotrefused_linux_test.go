//go:build linux

package dnspolicy

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// TestRefusedSlotKeepsNoStalePolicy: a policy runs in a follower's slot;
// a new policy of the table (bob may now ask for www.example.lab) is one
// the kernel refuses in the slot. The kernel's refusal is real: the new
// program is the policy's own, loaded with the expected attach type
// cgroup_skb/ingress, which the egress program's program array does not
// take (see TestSlotTakesOnlyEgressPrograms) but the egress hook does
// (a cgroup_skb program not loaded for egress may be attached there).
// place then attaches the new policy as a program of its own, and must
// empty the slot: the old policy left there would go on checking the
// queries beside it, with its stale list (bob's query stopped, while
// the operator is told the new policy runs).
func TestRefusedSlotKeepsNoStalePolicy(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	e.startFollower()
	e.wantVia(ViaFollower)
	e.stoppedDig(bob, "www.example.lab")

	// The new policy, as Install loads it, but for the ingress hook.
	cfg := e.cfg
	var logs bytes.Buffer
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	netns, err := netnsCookie(cfg.Target)
	if err != nil {
		t.Fatal(err)
	}
	dir := policyDir(cfg.PinRoot, cfg.Table, netns)
	entries, _ := Dedup(append(learned, Entry{UID: bob, Name: "www.example.lab", Source: "learned"}))
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := policySpec(Enforce, netns, key, len(entries))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range spec.Programs {
		p.AttachType = ebpf.AttachCGroupInetIngress
	}
	var objs bpf.DnspolicyObjects
	if err := loadSpec(&objs, spec, dir); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	if err := fill(&objs, key, entries); err != nil {
		t.Fatal(err)
	}

	unlock, err := follow.LockPins(dir)
	if err != nil {
		t.Fatal(err)
	}
	via, err := place(cfg, dir, objs.DnsPolicy)
	unlock()
	if err != nil {
		t.Fatalf("place a policy the slot refuses: %v", err)
	}
	pinAllowMap(dir, objs.DnsAllow, cfg.Log)
	if !strings.Contains(logs.String(), "refused the DNS policy") {
		t.Fatalf("the slot took the ingress program (no refusal warned): the test shows nothing; log: %s", logs.String())
	}
	if via != ViaOwn {
		t.Errorf("placed via %q, want %q", via, ViaOwn)
	}

	cg, err := cgroupbpf.ID(cfg.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	slot, err := follow.FollowerSlot(dir, cg)
	if err != nil || slot == nil {
		t.Fatalf("the follower's slot: %v %v", slot, err)
	}
	defer slot.Close()
	stale, err := follow.SlotProgram(slot)
	if err != nil {
		t.Fatal(err)
	}
	if stale != nil {
		stale.Close()
		t.Errorf("the old policy stays in the follower's slot after the new one was refused there: it still checks the queries")
	}
	if r := Status(e.cfg); r.Via != ViaOwn || r.Problem != "" || !r.Attached {
		t.Errorf("status: want attached via %q, got %+v", ViaOwn, r)
	}
	// The new policy is what checks the queries, alone.
	if got := e.dig(bob, "www.example.lab", "+tries=1"); got != "10.77.0.80" {
		t.Fatalf("bob's name allowed by the new policy: got %q (the old policy stops it)", got)
	}
	e.stoppedDig(bob, "db.corp.lab")
}
