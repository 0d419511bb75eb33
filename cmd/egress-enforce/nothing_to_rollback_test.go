package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestRollbackWithNoGenerationIsRefused: a rollback in a target where no
// generation was ever recorded used to print "no earlier generation:
// removed table inet egress (generation 1)" and exit 0, although there
// was no table to remove, and record that removal as the target's first
// generation. Now it is refused, and the error says where the generations
// are.
func TestRollbackWithNoGenerationIsRefused(t *testing.T) {
	l := newRolloutLab(t)
	mustFail(t, enforceBin, l.env, []string{"nothing to roll back", "no generation of table inet egress", "network namespace /run/netns/" + l.pair.Client.Name}, "rollback")
	if gens, _ := l.history(t); len(gens) != 0 {
		t.Errorf("a refused rollback was recorded: %+v", gens)
	}

	// Generations in the lab's namespace, none in another: the error
	// names the flag that picks the lab's.
	l.run(t, "apply", "--mode", "audit")
	other := lab.NewNetns(t)
	env := append(slices.Clone(l.env), "EGRESS_NETNS="+other.Name)
	mustFail(t, enforceBin, env, []string{"nothing to roll back", "/run/netns/" + other.Name, "--netns " + l.pair.Client.Name}, "rollback")
	if gens, _ := l.history(t); len(gens) != 1 {
		t.Errorf("the lab's history changed: %+v", gens)
	}
	if st := l.status(t); !st.Present {
		t.Error("the lab's table is gone")
	}
}

// TestRolloutCommandsNeedAStore: confirm, rollback and prune on a store
// path that does not exist (a mistyped --db) created an empty 16 MiB store
// there, and rollback then "removed" a table and recorded it. Now they
// say the store does not exist, and leave no file.
func TestRolloutCommandsNeedAStore(t *testing.T) {
	l := newRolloutLab(t)
	missing := filepath.Join(t.TempDir(), "typo.db")
	env := append(slices.Clone(l.env), "EGRESS_DB="+missing)
	for _, args := range [][]string{{"confirm"}, {"rollback"}, {"rollback", "--to", "1"}, {"prune"}} {
		out := mustFail(t, enforceBin, env, []string{"store does not exist", missing}, args...)
		if _, err := os.Stat(missing); err == nil {
			t.Errorf("%s created %s:\n%s", strings.Join(args, " "), missing, out)
			_ = os.Remove(missing)
		}
	}
}
