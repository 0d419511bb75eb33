package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

func (l *rolloutLab) restore(t *testing.T, args ...string) rollout.RestoreResult {
	t.Helper()
	var r rollout.RestoreResult
	if err := json.Unmarshal([]byte(l.run(t, append([]string{"restore", "--json"}, args...)...)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (l *rolloutLab) appliedDir() string {
	return rollout.AppliedDir(l.db, l.pair.Client.Path(), "egress")
}

// TestRestoreAfterReboot: apply and confirm, then a simulated reboot; restore
// puts the same table back, records it, and the files beside the store
// hold that table, private to root.
func TestRestoreAfterReboot(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "10m")
	l.run(t, "confirm")
	want := l.listing(t)
	l.reboot(t)

	out := l.run(t, "restore")
	if !strings.Contains(out, "restored generation 2 as generation 3") || !strings.Contains(out, "enforce mode, 2 elements") {
		t.Errorf("restore says:\n%s", out)
	}
	if got := l.listing(t); got != want {
		t.Errorf("restored table:\n%s\nwant:\n%s", got, want)
	}
	if !cannotReach(l.nobody, 8081) || !reaches(l.nobody, 8080) {
		t.Error("the restored table does not enforce the learned flows")
	}
	gens, cur := l.history(t)
	if cur != 3 || gens[2].Restores != 2 || gens[2].State != store.GenApplied || !strings.Contains(gens[2].Reason, "restore of generation 2") {
		t.Errorf("history: current %d, %+v", cur, gens)
	}

	// The files: state.json names generation 3 (the plan of 2), and the
	// script loads into an empty namespace as the same table.
	dir := l.appliedDir()
	s, err := rollout.ReadApplied(dir)
	if err != nil || s.Current == nil || s.Current.N != 3 || s.Current.Plan != 2 || s.Kept.N != 3 {
		t.Fatalf("state.json: %+v %v", s, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		if info, _ := e.Info(); info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", e.Name(), info.Mode())
		}
	}
	// Generation 2 went in as a delta: its plan is a patch of plan 1.
	if !slices.Equal(names, []string{"index-1.bin", "index-2.bin", "plan-1.json", "plan-1.nft", "plan-2.json", "plan-2.nft", "state.json"}) {
		t.Errorf("files beside the store: %v", names)
	}
	if info, _ := os.Stat(dir); info.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v", dir, info.Mode())
	}
	scratch := lab.NewNetns(t)
	lab.MustRun(t, "ip", "netns", "exec", scratch.Name, "nft", "-f", filepath.Join(dir, "plan-2.nft"))
	got := lab.CanonicalTable(lab.MustRun(t, "ip", "netns", "exec", scratch.Name, "nft", "list", "table", "inet", "egress"))
	if got != want {
		t.Errorf("plan-2.nft loads as:\n%s\nwant:\n%s", got, want)
	}
}

// TestRestorePendingIsNotConfirmed: a generation pending when the host went
// down counts as not confirmed: restore marks it rolled back and puts the
// kept one before it back. While its guard runs, restore refuses.
func TestRestorePendingIsNotConfirmed(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	want := l.listing(t)
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "10m")
	mustFail(t, enforceBin, l.env, []string{"generation 2 is pending and its guard", "is running"}, "restore")
	l.reboot(t)

	r := l.restore(t)
	if r.Action != rollout.RestoreRestored || r.Restores != 1 || r.Generation != 3 || !slices.Equal(r.RolledBack, []uint64{2}) {
		t.Errorf("restore: %+v", r)
	}
	if got := l.listing(t); got != want {
		t.Errorf("restored table:\n%s\nwant generation 1's:\n%s", got, want)
	}
	gens, cur := l.history(t)
	if cur != 3 || gens[1].State != store.GenRolledBack || !strings.Contains(gens[1].Note, "not confirmed before restart") {
		t.Errorf("history: current %d, %+v", cur, gens)
	}
	mustFail(t, enforceBin, l.env, []string{"already rolled back"}, "confirm")
}

// TestRestoreWithAnUnreadableStore: the store is damaged after an enforcing
// generation was kept and another one left pending; restore puts the kept
// one back from the files beside the store, and says so at error level.
func TestRestoreWithAnUnreadableStore(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	l.run(t, "apply", "--mode", "enforce")
	want := l.listing(t)
	l.run(t, "apply", "--mode", "enforce", "--enforce-users", "4242", "--confirm-within", "10m")
	l.reboot(t)
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(l.db, junk, 0o600); err != nil {
		t.Fatal(err)
	}

	out, stderr, err := run(enforceBin, l.env, "restore")
	if err == nil {
		t.Errorf("restore from the files exits 0:\n%s", stderr)
	}
	lab.WantAll(t, "stderr", stderr, "level=ERROR", "the store cannot be read", "generation 3 was pending", "counts as not confirmed")
	if !strings.Contains(out, "restored generation 2 from "+l.appliedDir()+" (the store cannot be read)") {
		t.Errorf("restore says:\n%s", out)
	}
	if got := l.listing(t); got != want {
		t.Errorf("restored table:\n%s\nwant generation 2's:\n%s", got, want)
	}

	// Without the files either, boot_policy decides, loudly.
	if err := os.RemoveAll(l.db + ".applied"); err != nil {
		t.Fatal(err)
	}
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	mustFail(t, enforceBin, l.env, []string{"the store cannot be read", "boot_policy closed: applied the minimal table"},
		"restore", "--boot-policy", "closed")
	if st := l.status(t); !st.Present || st.Mode != plan.ModeEnforce || !cannotReach(l.nobody, 8080) {
		t.Errorf("boot_policy closed: %+v", st)
	}
}

// TestRestoreBootPolicy: with no generation, open leaves no table and closed
// applies the minimal one (recorded when there is a store, and restored as
// is the next time).
func TestRestoreBootPolicy(t *testing.T) {
	l := newRolloutLab(t)
	empty := filepath.Join(t.TempDir(), "none.db")
	noStore := append(slices.Clone(l.env), "EGRESS_DB="+empty)
	out := mustRun(t, enforceBin, noStore, "restore")
	if !strings.Contains(out, "boot_policy open") || l.status(t).Present {
		t.Errorf("restore with no store, boot_policy open: %s", out)
	}
	if _, err := os.Stat(empty); err == nil {
		t.Error("restore created a store")
	}
	out = mustRun(t, enforceBin, append(noStore, "EGRESS_BOOT_POLICY=closed"), "restore")
	if !strings.Contains(out, "boot_policy closed: applied the minimal table") {
		t.Errorf("restore, boot_policy closed: %s", out)
	}
	table := l.listing(t)
	lab.WantAll(t, "the closed table", table, "policy drop", `oifname "lo" accept`, "ip daddr 10.77.0.1 udp dport 53 ", `log prefix "NFT-EGRESS-DROP "`)
	if !cannotReach(l.nobody, 8080) {
		t.Error("the closed table lets a learned flow through")
	}

	// With a store that has no generation: the closed table is recorded.
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	r := l.restore(t, "--boot-policy", "closed")
	gens, cur := l.history(t)
	if r.Action != rollout.RestoreClosed || cur != 1 || gens[0].Mode != rollout.ModeClosed || r.Generation != 1 {
		t.Errorf("restore: %+v; history: %+v", r, gens)
	}
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	if r := l.restore(t); r.Action != rollout.RestoreRestored || r.Restores != 1 || r.Mode != rollout.ModeClosed {
		t.Errorf("restore of the closed generation: %+v", r)
	}
	if got := l.listing(t); got != table {
		t.Errorf("restored closed table:\n%s\nwant:\n%s", got, table)
	}
	mustFail(t, enforceBin, l.env, []string{"boot_policy", "not open or closed"}, "restore", "--boot-policy", "ajar")
}

// TestPutBackRunsThePreApplyCheck: a generation forced in over an empty
// baseline is not put back by rollback or restore without --force; restore
// then does what boot_policy says, loudly.
func TestPutBackRunsThePreApplyCheck(t *testing.T) {
	l := newRolloutLab(t)
	emptyDB := filepath.Join(t.TempDir(), "empty.db")
	if _, err := store.Create(emptyDB, store.Options{}); err != nil {
		t.Fatal(err)
	}
	l.db = emptyDB
	l.env = append(l.env, "EGRESS_DB="+emptyDB)
	mustFail(t, enforceBin, l.env, []string{"holds no flows"}, "apply", "--mode", "enforce")
	l.run(t, "apply", "--mode", "enforce", "--force") // 1
	l.run(t, "apply", "--mode", "audit")              // 2
	mustFail(t, enforceBin, l.env, []string{"roll back to generation 1", "holds no flows", "--force"}, "rollback", "--to", "1")
	if st := l.status(t); st.Mode != plan.ModeAudit {
		t.Errorf("a refused rollback changed the table to %s", st.Mode)
	}
	l.run(t, "rollback", "--to", "1", "--force") // 3, restores 1

	l.reboot(t)
	mustFail(t, enforceBin, l.env, []string{"level=ERROR", "generation 3 is NOT restored", "holds no flows", "boot_policy open"}, "restore")
	if l.status(t).Present {
		t.Error("boot_policy open: a table is in")
	}
	mustFail(t, enforceBin, l.env, []string{"generation 3 is NOT restored", "boot_policy closed"}, "restore", "--boot-policy", "closed")
	if st := l.status(t); st.Mode != plan.ModeEnforce || st.Sets[0].Elements != 0 {
		t.Errorf("boot_policy closed: %+v", st)
	}
	gens, _ := l.history(t)
	if last := gens[len(gens)-1]; last.Mode != rollout.ModeClosed {
		t.Errorf("the closed table is not recorded: %+v", last)
	}
}

// TestRemoveIsRecorded: remove is a generation, so a restore leaves no
// table; and it ends a pending generation, so its guard does not put a
// table back later.
func TestRemoveIsRecorded(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")                              // 1
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "10m") // 2
	gens, _ := l.history(t)
	guard := gens[1].GuardPID
	if out := l.run(t, "remove", "--reason", "maintenance"); !strings.Contains(out, "removed table inet egress") {
		t.Errorf("remove: %s", out)
	}
	waitUntil(t, waitFor, "the guard to exit", func() bool { return gone(guard) })
	if log := guardLog(t, l, 2); !strings.Contains(log, "is rolled-back: nothing to roll back") {
		t.Errorf("guard log:\n%s", log)
	}
	gens, cur := l.history(t)
	if cur != 3 || gens[1].State != store.GenRolledBack || gens[2].Mode != rollout.ModeRemoved || gens[2].Reason != "maintenance" {
		t.Errorf("history: current %d, %+v", cur, gens)
	}
	if r := l.restore(t); r.Action != rollout.RestoreRemoved || r.Restores != 3 || l.status(t).Present {
		t.Errorf("restore after remove: %+v", r)
	}
	if out := l.run(t, "remove"); !strings.Contains(out, "nothing to remove") {
		t.Errorf("second remove: %s", out)
	}
	if gens, _ := l.history(t); len(gens) != 3 {
		t.Errorf("a remove with nothing to remove was recorded: %+v", gens)
	}
}
