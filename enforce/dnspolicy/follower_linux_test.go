//go:build linux

package dnspolicy

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
)

// The policy inside the DNS follower's egress program: every hand-over
// between its own program and the follower's slot, on the real kernel,
// with the policy in enforce the whole time.

func (e *env) followCfg() follow.Config {
	return follow.Config{Cgroup: e.cg.Path, Target: e.cfg.Target, Table: e.cfg.Table, PinRoot: e.cfg.PinRoot}
}

// testFollower is a follower in this process; Close may be called twice.
type testFollower struct {
	f    *follow.Follower
	once sync.Once
	err  error
}

func (tf *testFollower) Close() error {
	tf.once.Do(func() { tf.err = tf.f.Close() })
	return tf.err
}

// startFollower starts a follower in this process on the env's cgroup,
// namespace and table; t.Cleanup closes it if the test did not.
func (e *env) startFollower() *testFollower {
	e.t.Helper()
	f, err := follow.Start(e.followCfg())
	if err != nil {
		e.t.Fatalf("start follower: %v", err)
	}
	tf := &testFollower{f: f}
	e.t.Cleanup(func() { _ = tf.Close() })
	return tf
}

// wantVia checks where the policy runs, and that exactly one program is
// on the cgroup's egress hook (the follower's, or the policy's own).
func (e *env) wantVia(via string) {
	e.t.Helper()
	r := Status(e.cfg)
	if r.Problem != "" || !r.Attached || r.Via != via || r.Mode != Enforce {
		e.t.Fatalf("status: want attached in enforce via %q, got %+v", via, r)
	}
	if n := e.egressPrograms(); n != 1 {
		e.t.Fatalf("%d programs on the cgroup's egress hook, want 1", n)
	}
	_, err := os.Stat(filepath.Join(r.pinDir(e), follow.PinPolicyLink))
	if own := err == nil; own != (via == ViaOwn) {
		e.t.Fatalf("via %q, but the policy's own link pinned: %v", via, own)
	}
}

func (r Report) pinDir(e *env) string {
	netns, err := netnsCookie(e.cfg.Target)
	if err != nil {
		e.t.Fatal(err)
	}
	return policyDir(e.cfg.PinRoot, e.cfg.Table, netns)
}

// egressPrograms counts the programs attached to the cgroup's egress hook.
func (e *env) egressPrograms() int {
	e.t.Helper()
	q, err := link.QueryPrograms(link.QueryOptions{Target: e.cg.FD(), Attach: ebpf.AttachCGroupInetEgress})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(q.Programs)
}

// checked: alice's learned name resolves, bob's query of it is stopped
// (the policy counts it: it ran).
func (e *env) checked() {
	e.t.Helper()
	if got := e.dig(alice, "www.example.lab"); got != "10.77.0.80" {
		e.t.Fatalf("alice's learned name: got %q", got)
	}
	e.stoppedDig(bob, "www.example.lab")
}

// TestPolicyMovesIntoFollowerAndBack: a policy with its own program; a
// follower starts on the same cgroup: the policy moves into the
// follower's slot (one program on the hook) and still stops what it must;
// the follower stops cleanly: the policy has its own program again.
func TestPolicyMovesIntoFollowerAndBack(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	e.wantVia(ViaOwn)
	e.followerComesAndGoes()
	// And again: a second follower takes it the same way.
	e.startFollower()
	e.wantVia(ViaFollower)
	e.checked()
}

// TestPolicyInstalledUnderFollower: a follower runs first; the policy
// installed goes in its slot, never with a program of its own; a new
// install replaces it there (bob's name allowed now); removing it empties
// the slot: queries are no longer checked.
func TestPolicyInstalledUnderFollower(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	if err := Remove(e.cfg); err != nil {
		t.Fatal(err)
	}
	if n := e.egressPrograms(); n != 0 {
		t.Fatalf("%d programs on the egress hook after the removal", n)
	}
	e.startFollower()
	entries, _ := Dedup(learned)
	inst, err := Install(e.cfg, entries)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Via != ViaFollower {
		t.Fatalf("installed via %q, want %q", inst.Via, ViaFollower)
	}
	e.wantVia(ViaFollower)
	e.checked()
	more, _ := Dedup(append(learned, Entry{UID: bob, Name: "db.corp.lab", Source: "learned"}))
	if _, err := Install(e.cfg, more); err != nil {
		t.Fatal(err)
	}
	e.wantVia(ViaFollower)
	if got := e.dig(bob, "db.corp.lab"); got != "10.77.0.82" {
		t.Fatalf("bob's name after the new install: %q", got)
	}
	e.stoppedDig(bob, "www.example.lab")
	e.cfg.Mode = Off
	if _, err := Install(e.cfg, nil); err != nil {
		t.Fatal(err)
	}
	if r := Status(e.cfg); r.Attached || r.Problem != "" {
		t.Fatalf("status after removal: %+v", r)
	}
	if got := e.dig(bob, "www.example.lab"); got != "10.77.0.80" {
		t.Fatalf("after removal bob's query is still checked: %q", got)
	}
}

// TestPolicySurvivesKilledFollower: a follower process takes the policy
// into its slot and is killed (SIGKILL: no cleanup). Its program stays
// attached (pinned) and the slot stays filled (the program array is
// pinned: the kernel empties one when its last user reference goes): the
// policy still stops what it must. A new follower takes over; when it
// stops cleanly the policy gets its own program again.
func TestPolicySurvivesKilledFollower(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	e.killFollower(e.runFollowerProcess())
	e.checked()
	e.wantVia(ViaFollower)
	e.followerComesAndGoes()
}

// followerComesAndGoes starts a follower (the policy moves into its
// slot), checks queries, stops it cleanly (the policy has its own program
// again) and checks queries again.
func (e *env) followerComesAndGoes() {
	e.t.Helper()
	f := e.startFollower()
	e.wantVia(ViaFollower)
	e.checked()
	if err := f.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.wantVia(ViaOwn)
	e.checked()
}

// runFollowerProcess runs a follower in a child process (this test binary
// with DP_HELPER=follower) and waits until its programs are attached and
// it took the policy; the test kills it.
func (e *env) runFollowerProcess() *exec.Cmd {
	e.t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DP_HELPER=follower", "DP_CGROUP="+e.cg.Path, "DP_NETNS="+e.cfg.Target.Netns,
		"DP_TABLE="+e.cfg.Table, "DP_PINS="+e.cfg.PinRoot)
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	// Its stdin stays open: it runs until it is killed.
	if _, err := cmd.StdinPipe(); err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		e.t.Fatalf("the follower process did not start: %q %v", sc.Text(), sc.Err())
	}
	e.wantVia(ViaFollower)
	return cmd
}

// reinstall installs the policy again, with the same entries.
func (e *env) reinstall() {
	e.t.Helper()
	entries, _ := Dedup(learned)
	if _, err := Install(e.cfg, entries); err != nil {
		e.t.Fatal(err)
	}
}

// killFollower kills the follower process (SIGKILL) and waits for its end.
func (e *env) killFollower(cmd *exec.Cmd) {
	e.t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	_ = cmd.Wait()
}

// helperFollower is DP_HELPER=follower: it starts a follower, prints
// "ready" and waits to be killed (or for its stdin to close).
func helperFollower() error {
	f, err := follow.Start(follow.Config{Cgroup: os.Getenv("DP_CGROUP"), Target: targetOf(os.Getenv("DP_NETNS")),
		Table: os.Getenv("DP_TABLE"), PinRoot: os.Getenv("DP_PINS"), Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return f.Close()
}

// TestNoQueryPassesWhileFollowerComesAndGoes: alice floods a UDP sink on
// port 53 with a name she may not ask for, while a follower starts and
// stops (cleanly, and once killed) again and again, and the policy is
// installed again in each state: the policy moves between its own
// program and the follower's slot each time, and not one
// query reaches the sink. At the end, her allowed name reaches it (the
// sink does receive what passes).
func TestNoQueryPassesWhileFollowerComesAndGoes(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	const sinkIP = "10.77.0.53"
	lab.MustRun(t, "ip", "-n", e.p.Server.Name, "addr", "add", sinkIP+"/32", "dev", "veth0")
	var denied, allowed atomic.Int64
	lab.ServeUDP(t, e.p.Server, "udp4", sinkIP+":53", func(b []byte) {
		switch {
		case strings.Contains(string(b), "tunnel"):
			denied.Add(1)
		case strings.Contains(string(b), "example"):
			allowed.Add(1)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	flood := e.as(alice).Command(ctx, "env", "DP_HELPER=stream", "DP_SERVER="+sinkIP+":53",
		"DP_MSG="+hexQuery("x1.tunnel.lab"), helperBin)
	flood.Stderr = os.Stderr
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = flood.Wait() })
	// A round starts once the flood was seen stopped in the current state.
	stoppedMore := func() {
		t.Helper()
		before := e.stats().Denied
		lab.Await(t, "more stopped queries", func() bool { return e.stats().Denied > before+100 })
	}
	stoppedMore()
	for i := range 6 {
		if i == 3 {
			e.killFollower(e.runFollowerProcess())
			stoppedMore()
			f := e.startFollower() // over the dead one's check
			stoppedMore()
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			stoppedMore()
			continue
		}
		f := e.startFollower()
		stoppedMore()
		e.reinstall() // into the follower's slot
		stoppedMore()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		stoppedMore()
		e.reinstall() // its own program again
		stoppedMore()
	}
	e.wantVia(ViaOwn)
	cancel()
	if err := flood.Wait(); err != nil && !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal(err)
	}
	t.Logf("queries stopped: %d", e.stats().Denied)
	if n := denied.Load(); n != 0 {
		t.Fatalf("%d never-allowed queries reached the sink during the hand-overs", n)
	}
	e.as(alice).MustRun(t, "env", "DP_HELPER=flood", "DP_SERVER="+sinkIP+":53", "DP_MSG="+hexQuery("www.example.lab"), "DP_N=10", helperBin)
	lab.Await(t, "the allowed queries at the sink", func() bool { return allowed.Load() > 0 })
}

func targetOf(netns string) nft.Target { return nft.Target{Netns: netns} }

func hexQuery(name string) string { return hex.EncodeToString(query(name)) }

// helperStream is DP_HELPER=stream: it sends msg to server again and
// again until it is killed (a stopped query is EPERM: it goes on).
func helperStream(server string, msg []byte) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	for {
		_, _ = c.Write(msg)
	}
}

// TestSlotTakesOnlyEgressPrograms records this kernel's rule for the
// follower's program array: the policy's program (cgroup_skb/egress,
// from another object) is taken; a cgroup_skb program with another
// expected attach type (ingress, or none: both are 0) is refused (the
// kernel compares the expected attach types of a program array's
// programs: an egress program may not tail call an ingress one).
func TestSlotTakesOnlyEgressPrograms(t *testing.T) {
	lab.Require(t)
	spec, err := bpf.LoadFollow()
	if err != nil {
		t.Fatal(err)
	}
	var objs bpf.FollowObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	pspec, err := bpf.LoadDnspolicy()
	if err != nil {
		t.Fatal(err)
	}
	var pobjs bpf.DnspolicyObjects
	if err := pspec.LoadAndAssign(&pobjs, nil); err != nil {
		t.Fatal(err)
	}
	defer pobjs.Close()
	if err := follow.FillSlot(objs.DnsPolicySlot, pobjs.DnsPolicy); err != nil {
		t.Fatalf("the policy's egress program refused: %v", err)
	}
	// BPF_CGROUP_INET_INGRESS is 0: also what a program loaded without
	// an expected attach type has.
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSKB, AttachType: ebpf.AttachCGroupInetIngress, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = follow.FillSlot(objs.DnsPolicySlot, p)
	t.Logf("a cgroup_skb/ingress program: %v", err)
	if err == nil {
		t.Errorf("a cgroup_skb/ingress program was taken in the egress program's slot")
	}
}

// TestFollowerOfAnotherCgroupLeavesPolicyAlone: the policy runs in the
// slot of a follower that died; a follower of another cgroup, same table
// and namespace, would replace that follower's program (and so take the
// policy off the first cgroup): it refuses to start, and the policy still
// checks the first cgroup's queries.
func TestFollowerOfAnotherCgroupLeavesPolicyAlone(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	e.killFollower(e.runFollowerProcess())
	cfg := e.followCfg()
	cfg.Cgroup = lab.NewCgroup(t).Path
	f, err := follow.Start(cfg)
	if err == nil {
		_ = f.Close()
		t.Fatal("a follower of another cgroup started over the one carrying the policy")
	}
	if !strings.Contains(err.Error(), "another cgroup") {
		t.Fatalf("refusal: %v", err)
	}
	e.wantVia(ViaFollower)
	e.checked()
}

// TestFollowerTakesPolicyOfEarlierVersion: a policy installed by a
// version that pinned only its link (no program pin): a follower takes
// its program from the link, pins it, and the policy runs in the slot
// and comes back as its own program at a clean stop.
func TestFollowerTakesPolicyOfEarlierVersion(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	if err := os.Remove(filepath.Join(Report{}.pinDir(e), follow.PinPolicyProgram)); err != nil {
		t.Fatal(err)
	}
	e.followerComesAndGoes()
}
