//go:build linux

package rollout

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// Generation modes besides the plan modes.
const (
	// ModeRemoved marks a generation that removed the table.
	ModeRemoved = "removed"
	// ModeClosed marks the minimal table restore applied for boot_policy
	// closed (plan.ClosedPlan).
	ModeClosed = "closed"
)

// targetKey is how generations name their target.
func targetKey(t nft.Target) string { return t.Path() }

func ours(g *store.Generation, target, table string) bool {
	return g.Target == target && g.Table == table
}

// pendingish: installed (or being installed) with a confirm window, and
// neither confirmed nor rolled back yet.
func pendingish(g *store.Generation) bool {
	return g.State == store.GenPending || g.State == store.GenApplying
}

// current is the newest generation of the target and table that took
// effect (nil when there is none).
func current(gens []store.Generation, target, table string) *store.Generation {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if !ours(g, target, table) || g.State == store.GenFailed {
			continue
		}
		return g
	}
	return nil
}

// kept is the newest kept generation of the target and table older than
// before (any when before is 0); nil when there is none.
func kept(gens []store.Generation, target, table string, before uint64) *store.Generation {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if ours(g, target, table) && g.Kept() && (before == 0 || g.N < before) {
			return g
		}
	}
	return nil
}

func find(gens []store.Generation, n uint64) *store.Generation {
	i := slices.IndexFunc(gens, func(g store.Generation) bool { return g.N == n })
	if i < 0 {
		return nil
	}
	return &gens[i]
}

// History returns the generations of the target and table, oldest first,
// and the number of the current one (0: none).
func History(st *store.Store, t nft.Target, table string) ([]store.Generation, uint64, error) {
	gens, err := st.Generations()
	if err != nil {
		return nil, 0, err
	}
	var out []store.Generation
	for _, g := range gens {
		if ours(&g, targetKey(t), table) {
			out = append(out, g)
		}
	}
	var cur uint64
	if c := current(gens, targetKey(t), table); c != nil {
		cur = c.N
	}
	return out, cur, nil
}

// Current returns the current generation of the target and table (nil:
// none).
func Current(st *store.Store, t nft.Target, table string) (*store.Generation, error) {
	gens, cur, err := History(st, t, table)
	if err != nil || cur == 0 {
		return nil, err
	}
	return find(gens, cur), nil
}

// generationOf is the record of a generation that installs p.
func generationOf(p *plan.Plan, t nft.Target, command, reason string) store.Generation {
	return store.Generation{
		Target: targetKey(t), Table: p.Table, Mode: string(p.Mode),
		EnforceUIDs: p.EnforceUIDs, AuditUIDs: p.AuditUIDs,
		EnforceServices: p.EnforceServices, AuditServices: p.AuditServices,
		Rules: len(p.Rules), Elements: p.Elements(), Command: command, Reason: reason,
	}
}

// rollbackTarget is the generation a pending generation goes back to: the
// newest kept one before it (0: none, the table is removed).
func rollbackTarget(gens []store.Generation, g *store.Generation) uint64 {
	if k := kept(gens, g.Target, g.Table, g.N); k != nil && k.Mode != ModeRemoved {
		return k.N
	}
	return 0
}

// defaultBack is the newest kept generation before cur with another table.
func defaultBack(gens []store.Generation, cur *store.Generation) uint64 {
	for i := len(gens) - 1; i >= 0; i-- {
		g := &gens[i]
		if g.N >= cur.N || !ours(g, cur.Target, cur.Table) || !g.Kept() {
			continue
		}
		if g.Effective() == cur.Effective() || (g.Mode == ModeRemoved && cur.Mode == ModeRemoved) {
			continue
		}
		return g.N
	}
	return 0
}

// bootID identifies this boot of the kernel: a guard recorded in another
// boot is gone.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// guardAlive reports whether the guard process of pending generation g
// still runs: same boot, and its pid runs "confirm-guard --generation N".
func guardAlive(g *store.Generation) bool {
	if g.GuardPID <= 0 || (g.GuardBoot != "" && g.GuardBoot != bootID()) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", g.GuardPID))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	i := slices.Index(args, "--generation")
	return slices.Contains(args, "confirm-guard") && i >= 0 && i+1 < len(args) && args[i+1] == strconv.FormatUint(g.N, 10)
}

// CurrentGeneration is the number of the generation the store says table
// in target t is (0: none).
func CurrentGeneration(st *store.Store, t nft.Target, table string) (uint64, error) {
	gens, err := st.Generations()
	if err != nil {
		return 0, err
	}
	if g := current(gens, targetKey(t), table); g != nil {
		return g.N, nil
	}
	return 0, nil
}

// MemoPath is where apply keeps the memo of the export it applied to
// table in target t (enforce/baseline's ReadExportMemo).
func MemoPath(db string, t nft.Target, table string) string {
	return filepath.Join(AppliedDir(db, targetKey(t), table), "export-memo.bin")
}
