package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestApplyWhilePendingIsRefused is the report's reproduction: apply
// audit; apply enforce with a confirm window, and the guard dies (as in a
// reboot); apply enforce with a 3 s window. Its guard used to roll back to
// the unconfirmed generation, the enforcing table again. Now the second
// apply is refused, and with --force the pending one is rolled back first,
// so the new guard goes back to the audit table.
func TestApplyWhilePendingIsRefused(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")                              // 1
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "10m") // 2
	mustFail(t, enforceBin, l.env, []string{"generation 2 (enforce mode) is pending until", "its guard (pid", "rolls it back unless it is confirmed", "--force"},
		"apply", "--mode", "enforce", "--confirm-within", "3s")
	gens, _ := l.history(t)
	_ = syscall.Kill(gens[1].GuardPID, syscall.SIGKILL)
	waitUntil(t, waitFor, "the guard to die", func() bool { return gone(gens[1].GuardPID) })

	mustFail(t, enforceBin, l.env, []string{"generation 2 (enforce mode) is pending, but its guard", "is gone", "egress-enforce confirm"},
		"apply", "--mode", "enforce", "--confirm-within", "3s")
	if gens, _ := l.history(t); len(gens) != 2 {
		t.Fatalf("a refused apply was recorded: %+v", gens)
	}
	if st := l.status(t); st.Mode != plan.ModeEnforce {
		t.Fatalf("a refused apply changed the table to %s", st.Mode)
	}

	out := l.run(t, "apply", "--mode", "enforce", "--confirm-within", "3s", "--force") // 3 restores 1; 4 pending
	if !strings.Contains(out, "applied generation 4") || !strings.Contains(out, "rolls back to generation 3") {
		t.Errorf("apply --force says:\n%s", out)
	}
	waitUntil(t, waitFor, "the rollback of generation 4", func() bool {
		gens, cur := l.history(t)
		return cur == 5 && gens[3].State == store.GenRolledBack
	})
	gens, _ = l.history(t)
	if gens[1].State != store.GenRolledBack || !strings.Contains(gens[1].Note, "forced apply") || gens[2].Restores != 1 {
		t.Errorf("the forced apply did not roll generation 2 back first: %+v", gens)
	}
	if gens[4].Restores != 1 {
		t.Errorf("the guard of generation 4 put back generation %d's table, want 1 (audit): %+v", gens[4].Restores, gens)
	}
	if st := l.status(t); st.Mode != plan.ModeAudit {
		t.Errorf("after the rollback the table is in %s mode, want audit", st.Mode)
	}
}

// TestRollbackOnlyToKeptGenerations: neither a rolled-back nor a pending
// generation is put back, by hand or by default.
func TestRollbackOnlyToKeptGenerations(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")                             // 1
	l.run(t, "apply", "--mode", "enforce", "--confirm-within", "3s") // 2, rolled back by 3
	waitUntil(t, waitFor, "the rollback", func() bool { _, cur := l.history(t); return cur == 3 })
	mustFail(t, enforceBin, l.env, []string{"generation 2 is rolled-back", "applied and kept"}, "rollback", "--to", "2")
	l.run(t, "apply", "--mode", "enforce", "--enforce-users", "4242", "--confirm-within", "10m") // 4, pending
	mustFail(t, enforceBin, l.env, []string{"generation 4 is pending", "applied and kept"}, "rollback", "--to", "4")
	// By hand, a pending current generation is ended, and the default goes
	// to the newest kept generation with another table: 3 (generation 1's).
	if out := l.run(t, "rollback"); !strings.Contains(out, "restored generation 1 as generation 5") {
		t.Errorf("rollback: %s", out)
	}
	gens, _ := l.history(t)
	if gens[3].State != store.GenRolledBack || !strings.Contains(gens[3].Note, "rolled back by hand") {
		t.Errorf("the pending generation was not ended: %+v", gens[3])
	}
	// Now every earlier generation is rolled back (2, 4) or has this table
	// (1, 3): there is no other table to go back to, so it goes.
	if out := l.run(t, "rollback"); !strings.Contains(out, "removed table inet egress") {
		t.Errorf("second rollback: %s", out)
	}
}

// TestAppliesWaitForEachOther: an apply waits for the lock beside the store
// and says so; it applies once the lock is free.
func TestAppliesWaitForEachOther(t *testing.T) {
	l := newRolloutLab(t)
	f, err := os.OpenFile(rollout.LockPath(l.db), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(enforceBin, "apply", "--mode", "audit")
	cmd.Env = append(os.Environ(), l.env...)
	var stderr lab.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitFor, "apply to wait for the lock", func() bool { return strings.Contains(stderr.String(), "waiting for the lock") })
	if st := l.status(t); st.Present {
		t.Fatal("apply went ahead while the lock was held")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr.String())
	}
	if st := l.status(t); !st.Present {
		t.Error("apply did not apply after the lock was freed")
	}
}

// TestGuardOutlastsABusyStore: a reader holds the store across the
// deadline (a shared flock makes bbolt writers wait; an exclusive one makes
// readers wait too). The guard logs every failure at error level, keeps
// trying, and rolls back once the store is free; it does not take the
// failure for a confirmation.
func TestGuardOutlastsABusyStore(t *testing.T) {
	for _, how := range []string{"shared", "exclusive"} {
		t.Run(how, func(t *testing.T) {
			l := newRolloutLab(t)
			l.run(t, "apply", "--mode", "audit")
			// The window only has to outlast taking a lock in this process.
			l.run(t, "apply", "--mode", "enforce", "--confirm-within", "15s")
			// apply returns once its guard has the generation and its
			// rollback in memory: the lock below meets a guard that is
			// watching. (When apply did not wait, the lock could meet a
			// guard still loading, which never learnt the deadline.)
			if log := guardLog(t, l, 2); !strings.Contains(log, "msg=guarding") {
				t.Fatalf("apply returned before its guard was guarding:\n%s", log)
			}
			f, err := os.Open(l.db)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(l.db, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			gens, err := st.Generations()
			if err != nil || gens[1].State != store.GenPending || !time.Now().Before(gens[1].Deadline) {
				t.Fatalf("the store was not taken before the deadline: %+v %v", gens, err)
			}
			// Under a shared lock reads pass and the rollback's write fails.
			// Under an exclusive one the reads fail too: before the deadline
			// that is logged as such; once the deadline (known from the last
			// read) has passed, the guard goes on to the rollback, whose write
			// fails. On a slow machine the deadline can pass before the first
			// failed read, so either message shows the guard failing loudly.
			want := []string{"record the rollback failed"}
			if how == "exclusive" {
				if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
					t.Fatal(err)
				}
				want = append(want, "read the generation's state failed")
			}
			guard := gens[1].GuardPID
			defer func() {
				if t.Failed() {
					t.Logf("guard alive: %v; guard log:\n%s", alive(guard), guardLog(t, l, 2))
				}
			}()
			waitUntil(t, waitFor, "the guard to fail at error level", func() bool {
				log := guardLog(t, l, 2)
				if !strings.Contains(log, "level=ERROR") {
					return false
				}
				for _, w := range want {
					if strings.Contains(log, w) {
						return true
					}
				}
				return false
			})
			if !alive(guard) {
				t.Fatalf("the guard gave up:\n%s", guardLog(t, l, 2))
			}
			if st := l.status(t); st.Mode != plan.ModeEnforce {
				t.Errorf("mode %s while the store was busy", st.Mode)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, waitFor, "the rollback", func() bool { return l.status(t).Mode == plan.ModeAudit })
			waitUntil(t, waitFor, "the guard to exit", func() bool { return gone(guard) })
			gens, cur := l.history(t)
			if cur != 3 || gens[1].State != store.GenRolledBack || gens[2].Restores != 1 {
				t.Errorf("history: current %d, %+v", cur, gens)
			}
			if log := guardLog(t, l, 2); !strings.Contains(log, "msg=\"rolled back\"") {
				t.Errorf("guard log:\n%s", log)
			}
		})
	}
}
