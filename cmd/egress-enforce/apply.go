package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/dnspolicy"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/phase"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// rolloutFlags are the flags of the commands that apply a table as a new
// generation: apply and reconcile --apply.
type rolloutFlags struct {
	force         bool
	confirmWithin time.Duration
	deniedRate    string
	reason        string
}

func (r *rolloutFlags) add(f *pflag.FlagSet, forceHelp, confirmHelp, rateHelp, reasonHelp string) {
	f.BoolVar(&r.force, "force", false, forceHelp)
	f.DurationVar(&r.confirmWithin, "confirm-within", 0, confirmHelp)
	f.StringVar(&r.deniedRate, "rollback-if-denied-rate", "", rateHelp)
	f.StringVar(&r.reason, "reason", "", reasonHelp)
}

// rate reads --rollback-if-denied-rate (0: none), which needs
// --confirm-within.
func (r *rolloutFlags) rate() (float64, error) {
	rate, err := parseRate(r.deniedRate)
	if err != nil {
		return 0, err
	}
	if rate > 0 && r.confirmWithin <= 0 {
		return 0, fmt.Errorf("--rollback-if-denied-rate needs --confirm-within")
	}
	return rate, nil
}

// preApply runs the checks of every path that can install a table that
// drops: the pre-apply check of the plan (plan.Guard; --force turns a
// refusal into a warning); a baseline that could not be read stops a plan
// that drops nothing too; and a table that follows names needs its follow
// mark unused (--force overrides that too where forceMark).
func preApply(e *env, p *plan.Plan, baselineErr error, force, forceMark bool) error {
	if err := plan.Guard(p, baselineErr); err != nil {
		if !force {
			return err
		}
		slog.Warn("--force: " + err.Error())
	}
	if baselineErr != nil && !p.Drops() {
		return baselineErr
	}
	if err := e.kernel.CheckPlanMark(p); err != nil {
		switch {
		case !forceMark:
			return err
		case !force:
			return fmt.Errorf("%w (pass --force to apply anyway)", err)
		}
		slog.Warn("--force: " + err.Error())
	}
	return nil
}

// applied is a generation rollOut applied, with the store it is in.
type applied struct {
	gen *store.Generation
	res *nft.ApplyResult
	st  *store.Store
}

// rollOut applies p as a new generation (rollout.Apply), with a guard
// process when it has a confirm window: the one path of apply and
// reconcile --apply. forcePending: --force rolls a pending generation
// back first. approve (nil: none) gives approvals to record with the
// generation (rollout.Options.Approve), approveAfter the same applied as a
// delta (rollout.Options.ApproveAfter; nil: approve's).
func rollOut(e *env, p *plan.Plan, r rolloutFlags, forcePending bool, approve func(n uint64) *store.Approvals, approveAfter func(n, base uint64, d *plan.Delta) *store.Approvals) (*applied, error) {
	rate, err := r.rate()
	if err != nil {
		return nil, err
	}
	st, err := e.applyStore()
	if err != nil {
		return nil, fmt.Errorf("record the generation: %w", err)
	}
	gen, res, err := rollout.Apply(e.kernel, p, rollout.Options{
		Store: st, Command: commandLine(), Reason: r.reason, ConfirmWithin: r.confirmWithin, Force: forcePending && r.force,
		StartGuard:   func(n uint64) (int, error) { return startGuard(e.Cfg, n, rate) },
		Approve:      approve,
		ApproveAfter: approveAfter,
	})
	if err != nil {
		return nil, err
	}
	return &applied{gen: gen, res: res, st: st}, nil
}

func newApply(g *cli.Globals) *cobra.Command {
	var dryRun, asJSON bool
	var r rolloutFlags
	var pinDir string
	cmd := &cobra.Command{
		Use:   "apply [--mode audit|enforce] [--enforce-users U,..|--audit-users U,..|--enforce-services S,..|--audit-services S,..] [--min-hits N] [--since D] [--from FILE ...] [--netns NAME|PATH] [--dry-run] [--force] [--json] [--reason TEXT] [--confirm-within D [--rollback-if-denied-rate N/s]]",
		Short: "Replace our table in the kernel with the one built from the baseline",
		Long: `apply replaces table inet egress in one netlink transaction (add table, delete
table, add table and its contents, in one batch): no packet ever meets a
missing or half-built table. If the kernel rejects the batch, the previous
table stays as it was. The result is read back to verify it.

Every plan that drops (--mode enforce, and staged enforcement either way)
is refused for a missing or unreadable baseline, an empty one, and one that
would cut off DNS, unless --force. A table that follows names is refused
when another table or a routing rule of the namespace uses its follow_mark
bit, unless --force. --dry-run shows what would change and applies nothing.

With --netns NAME the DNS servers come from /etc/netns/NAME/resolv.conf when
it exists, else /etc/resolv.conf (a configured resolv_conf wins); the log
and --json say which.

Staged enforcement: --mode enforce --enforce-users alice,www-data drops only
for those users and keeps logging (not dropping) for everyone else;
--audit-users is the reverse. One table, one datapath. With match service or
user,service, --enforce-services system.slice/nginx.service (or a unit name:
nginx.service) and --audit-services stage by service, by the cgroup ids of
the services running now: keep "egress-enforce services" (or follow)
running, which replaces a restarted service's id in the same transaction as
its elements. Without it a restarted service falls out of the staging set:
with --audit-services it is enforced (the safe side), with --enforce-services
it is only audited until the id is put back (status says so).

Every apply is recorded as a generation in the store (history, rollback).
--confirm-within 2m makes it commit-confirmed: unless "egress-enforce confirm"
runs within 2 minutes, the previous generation is put back. A guard process
of its own does it, detached from the terminal: it still happens if the
session that ran apply dies or apply is killed. --rollback-if-denied-rate 50/s
also rolls back early when the table drops more than 50 packets a second.
While a generation is pending, another apply is refused; --force rolls the
pending one back first. Applies, rollbacks and restores wait for each other
(a lock beside the store).

With dns_policy audit or enforce, apply also (re)loads the DNS policy on the
configured cgroup from the store (see dns-policy): the names follow the
baseline, and the table is not left enforcing while DNS is an open door;
when it cannot, apply says so and exits 1.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			// A 100k-flow apply: 15% less CPU, 150 MiB more at its peak. At
			// 1M, one collection instead of three, ~0.4 s less CPU, 40-90
			// MiB more at a 2 GiB peak (what the others freed was the
			// export's flows, freed by the one left too).
			cli.FewerGCs(300)
			b, memo, err := buildApplyPlan(cmd, e, dryRun)
			if err != nil {
				return err
			}
			if err := preApply(e, b.plan, b.baselineErr, r.force, true); err != nil {
				memo.abort()
				return err
			}
			phase.Mark("pre-apply checks")
			if dryRun {
				return writeDiff(cmd, e, b.plan, asJSON, "dry run: nothing applied\n")
			}
			// The flows of the plan are approved with the generation, in
			// the write that records it applied (a delta's: those it
			// adds, when the store knows the others are approved). The
			// memo begins once they are made: after a delta is made, the
			// kernel applies it on one core while the approvals (needed
			// first, to record the generation) and then the memo (needed
			// last) are made on the other.
			approve := func(n uint64) *store.Approvals {
				defer memo.begin()
				return baseline.PlanApprovals(b.plan, n, b.opts.Now)
			}
			approveAfter := func(n, base uint64, d *plan.Delta) *store.Approvals {
				defer memo.begin()
				return baseline.PlanApprovalsAfter(b.plan, d, base, n, b.opts.Now)
			}
			a, err := rollOut(e, b.plan, r, true, approve, approveAfter)
			if err != nil {
				memo.abort()
				return err
			}
			memo.write(a.gen.N)
			if err := writeApplied(cmd, e, b.plan, a, r.confirmWithin, asJSON); err != nil {
				return err
			}
			phase.Mark("result written")
			return ensureDNSPolicy(cmd, e, pinDir, r.force, asJSON)
		}),
	}
	cmd.Flags().StringVar(&pinDir, "pin-dir", dnspolicy.DefaultPinRoot, "with dns_policy audit or enforce: where the DNS policy is pinned (a bpf file system)")
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "show what would change, apply nothing")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	r.add(f, "enforce even when the baseline is missing, empty or would cut off DNS; roll back a pending generation first",
		"roll back unless \"egress-enforce confirm\" runs within this long (e.g. 2m)",
		"with --confirm-within: roll back early when drops exceed this rate (e.g. 50/s)",
		"why this apply: kept in the history")
	return cmd
}

// writeApplied says what apply did.
func writeApplied(cmd *cobra.Command, e *env, p *plan.Plan, a *applied, confirmWithin time.Duration, asJSON bool) error {
	w := cmd.OutOrStdout()
	if asJSON {
		return printJSON(w, struct {
			Generation uint64 `json:"generation"`
			State      string `json:"state"`
			*nft.ApplyResult
			dnsServers
		}{a.gen.N, a.gen.State, a.res, dnsOf(p)})
	}
	fmt.Fprintf(w, "applied generation %d: table inet %s in %s, %s mode, %d elements, %d rules, in %s; read back and verified\n",
		a.gen.N, p.Table, e.target, p.Mode, a.res.Elements, a.res.Rules, a.res.Took.Round(time.Millisecond))
	switch d := a.res.Delta; {
	case d != nil:
		fmt.Fprintf(w, "as a delta from generation %d: %d elements added, %d removed (%d of them changed comments), %d rules added, %d removed\n",
			d.From, d.ElementsAdded-d.ElementsChanged, d.ElementsRemoved-d.ElementsChanged, d.ElementsChanged, d.RulesAdded, d.RulesRemoved)
	case a.res.KernelDiffers:
		fmt.Fprintf(w, "the whole table was replaced: the table in the kernel was not the one the store says (%s)\n", a.res.FullReason)
	case a.res.FullReason != "":
		fmt.Fprintf(w, "the whole table was replaced: %s\n", a.res.FullReason)
	}
	if cg, err := nft.HostCgroups(); err == nil {
		for _, svc := range p.StagedServices() {
			if _, ok := cg.ID(svc); !ok {
				fmt.Fprintf(w, "staged service %s is not running (no cgroup %s): it is in the table's set from when it starts, while \"egress-enforce services\" (or follow) runs\n", textsafe.String(svc), textsafe.String(filepath.Join(cg.Mount, svc)))
			}
		}
	}
	if len(p.EnforceServices) > 0 {
		fmt.Fprintf(w, "enforced services: %s; keep \"egress-enforce services\" (or follow) running: a service restarted without it is only audited until its new cgroup id is in the table\n",
			textsafe.Join(p.EnforceServices, ", "))
	}
	if confirmWithin > 0 {
		back := fmt.Sprintf("generation %d", a.gen.RollbackTo)
		if a.gen.RollbackTo == 0 {
			back = "no table (it will be removed)"
		}
		fmt.Fprintf(w, "run \"egress-enforce confirm\" before %s (within %s), or the guard (pid %d) rolls back to %s\n",
			a.gen.Deadline.Local().Format(time.TimeOnly), confirmWithin, a.gen.GuardPID, back)
	}
	return nil
}

// commandLine is the command as typed, for the history.
func commandLine() string {
	args := append([]string{filepath.Base(os.Args[0])}, os.Args[1:]...)
	for i, a := range args {
		if strings.ContainsAny(a, " \t\"'") {
			args[i] = strconv.Quote(a)
		}
	}
	return strings.Join(args, " ")
}

// parseRate reads "50/s", "50" or "" (off).
func parseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "/s"), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("--rollback-if-denied-rate: %q is not a rate such as 50/s", s)
	}
	return v, nil
}

// startGuard starts "egress-enforce confirm-guard" for generation n in a
// session of its own, its output in a log next to the store, and waits
// until it says it is guarding (it has the generation and its rollback in
// memory): apply touches the kernel only once a guard can roll it back. A
// guard that exits first, or is not guarding within guardReadyWait, is an
// error (and is killed), and nothing is applied. Then it lets the guard
// go: it outlives this process, its terminal and a SIGKILL of it.
func startGuard(cfg *config.Config, n uint64, rate float64) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	logPath := filepath.Join(filepath.Dir(cfg.DB), fmt.Sprintf("guard-%d.log", n))
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	args := []string{"confirm-guard", "--db", cfg.DB, "--table", cfg.Table, "--generation", strconv.FormatUint(n, 10), "--ready-fd", "3"}
	if cfg.Netns != "" {
		args = append(args, "--netns", nft.Target{Netns: cfg.Netns}.Path())
	}
	if rate > 0 {
		args = append(args, "--rollback-if-denied-rate", strconv.FormatFloat(rate, 'g', -1, 64))
	}
	ready, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer ready.Close()
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	if err := awaitGuard(ready, guardReadyWait); err != nil {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		return 0, fmt.Errorf("the guard (pid %d) %w; its log: %s", pid, err, logPath)
	}
	_ = cmd.Process.Release()
	return pid, nil
}

// guardReadyLine is what a guard writes to --ready-fd once it is guarding.
const guardReadyLine = "guarding\n"

// guardReadyWait bounds apply's wait for its guard. A guard reads the
// store (waiting up to 2 s for its lock, and retrying) and the rollback's
// plan: seconds on a loaded machine, never a minute.
var guardReadyWait = time.Minute

// awaitGuard reads the guard's ready line, or says why there is none.
func awaitGuard(r *os.File, d time.Duration) error {
	if err := r.SetReadDeadline(time.Now().Add(d)); err != nil {
		return fmt.Errorf("wait for the guard: %w", err)
	}
	buf := make([]byte, len(guardReadyLine))
	_, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("was not guarding after %s", d)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("exited before it was guarding")
	case err != nil:
		return fmt.Errorf("wait for the guard: %w", err)
	case string(buf) != guardReadyLine:
		return fmt.Errorf("said %q, not that it is guarding", buf)
	}
	return nil
}
