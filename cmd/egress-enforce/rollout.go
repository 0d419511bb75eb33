package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/dnspolicy"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

func newConfirmGuard(g *cli.Globals) *cobra.Command {
	var gen uint64
	var rate float64
	var readyFD int
	cmd := &cobra.Command{
		Use:    "confirm-guard --generation N",
		Short:  "Roll generation N back unless it is confirmed in time (started by apply --confirm-within)",
		Hidden: true,
		Args:   cobra.NoArgs,
		PreRun: func(*cobra.Command, []string) {
			// Detached from any terminal; a stray signal of the session
			// that started it must not stop it.
			signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
		},
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			o := rollout.GuardOptions{MaxDeniedRate: rate, Logger: e.Log}
			if readyFD > 0 {
				// apply waits for this line before it touches the kernel.
				ready := os.NewFile(uintptr(readyFD), "ready")
				if ready == nil {
					return fmt.Errorf("--ready-fd %d: not an open file", readyFD)
				}
				o.Ready = func() {
					_, _ = ready.WriteString(guardReadyLine)
					_ = ready.Close()
				}
			}
			return rollout.GuardGeneration(cmd.Context(), e.Cfg.DB, e.kernel, gen, o)
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().Uint64Var(&gen, "generation", 0, "the pending generation")
	cmd.Flags().Float64Var(&rate, "rollback-if-denied-rate", 0, "roll back early above this many drops per second")
	cmd.Flags().IntVar(&readyFD, "ready-fd", 0, "write \"guarding\" to this file descriptor once the rollback is in memory")
	_ = cmd.MarkFlagRequired("generation")
	return cmd
}

func newConfirm(g *cli.Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "confirm [--netns NAME|PATH]",
		Short: "Keep the table applied with --confirm-within (stop its automatic rollback)",
		Args:  cobra.NoArgs,
		RunE: withExistingStore(g, func(cmd *cobra.Command, e *env, st *store.Store) error {
			gen, err := rollout.Confirm(st, e.target, e.Cfg.Table)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "confirmed generation %d (%s mode); it stays\n", gen.N, gen.Mode)
			return nil
		}),
	}
	netnsFlag(cmd, g)
	return cmd
}

func newRollback(g *cli.Globals) *cobra.Command {
	var to uint64
	var reason string
	var force bool
	cmd := &cobra.Command{
		Use:   "rollback [--to N] [--netns NAME|PATH] [--reason TEXT] [--force]",
		Short: "Put an earlier generation back (default: the one before the current)",
		Long: `rollback re-applies the table of an earlier generation atomically and records
it as a new generation. Without --to it goes back to the newest earlier
generation with a different table; with no earlier generation it removes the
table. "egress-enforce history" lists the generations. With no generation
recorded for the target (--netns) it is refused, and says which namespaces
have generations.

Only a generation that was applied and kept (applied, or confirmed in time)
can be put back: never a pending, rolled-back or failed one. A table that
drops traffic goes through the same check as apply --mode enforce (an empty
baseline, or one that would cut off DNS, is refused); --force puts it back
anyway. A pending current generation is marked rolled back.`,
		Args: cobra.NoArgs,
		RunE: withExistingStore(g, func(cmd *cobra.Command, e *env, st *store.Store) error {
			if reason == "" {
				reason = "rollback by hand"
			}
			gen, err := rollout.Rollback(st, e.kernel, e.Cfg.Table, rollout.RollbackOptions{
				To: to, Command: commandLine(), Reason: reason, Force: force, Logger: e.Log})
			if err != nil {
				return withElsewhere(st, e, err)
			}
			if gen.Mode == rollout.ModeRemoved {
				fmt.Fprintf(cmd.OutOrStdout(), "no earlier generation: removed table inet %s (generation %d)\n", e.Cfg.Table, gen.N)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored generation %d as generation %d (%s mode, %d elements)\n", gen.Restores, gen.N, gen.Mode, gen.Elements)
			return nil
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().Uint64Var(&to, "to", 0, "the generation to put back")
	cmd.Flags().StringVar(&reason, "reason", "", "why: kept in the history")
	cmd.Flags().BoolVar(&force, "force", false, "put the table back even when the pre-apply check refuses it")
	return cmd
}

func newHistory(g *cli.Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history [--netns NAME|PATH] [--json]",
		Short: "List the generations applied to our table in the target namespace",
		Long: `history lists the generations of our table in one network namespace
(--netns; default this host's): every apply, rollback, restore and removal,
oldest first, with its mode, learned elements, state, command and reason;
the current one is marked. Generations belong to a namespace: when the one
asked for has none, history says which namespaces have some, and the --netns
that picks each (generations_elsewhere in --json).`,
		Args: cobra.NoArgs,
		RunE: withStore(g, false, func(cmd *cobra.Command, e *env, st *store.Store) error {
			gens, cur, err := rollout.History(st, e.target, e.Cfg.Table)
			if err != nil {
				return err
			}
			others, err := rollout.Elsewhere(st, e.target, e.Cfg.Table)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, historyJSON{e.target.Path(), e.Cfg.Table, cur, nonNil(gens), nonNil(others)})
			}
			if len(gens) == 0 {
				fmt.Fprintf(w, "no generation of table inet %s in %s: nothing was applied there with this store (%s)\n", e.Cfg.Table, e.target, e.Cfg.DB)
			} else {
				fmt.Fprintf(w, "generations of table inet %s in %s, oldest first:\n", e.Cfg.Table, e.target)
				if err := writeHistory(w, gens, cur); err != nil {
					return err
				}
			}
			if s := nft.Elsewhere(e.Cfg.Table, others); s != "" {
				fmt.Fprintln(w, s)
			}
			return nil
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the generations as JSON")
	return cmd
}

// historyJSON is history --json: the generations of the target's table,
// and the other targets with generations of it.
type historyJSON struct {
	Target      string                    `json:"target"` // "" for this host's namespace
	Table       string                    `json:"table"`
	Current     uint64                    `json:"current"`
	Generations []store.Generation        `json:"generations"`
	Elsewhere   []store.TargetGenerations `json:"generations_elsewhere"`
}

// writeHistory prints the generations for people, the current one marked.
func writeHistory(w io.Writer, gens []store.Generation, cur uint64) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GEN\tTIME\tMODE\tELEMENTS\tSTATE\tCOMMAND\tREASON / NOTE")
	for _, gen := range gens {
		mark := " "
		if gen.N == cur {
			mark = "*"
		}
		mode := gen.Mode
		if len(gen.EnforceUIDs) > 0 {
			mode += " (enforce " + uids(gen.EnforceUIDs) + ")"
		} else if len(gen.AuditUIDs) > 0 {
			mode += " (audit " + uids(gen.AuditUIDs) + ")"
		} else if len(gen.EnforceServices) > 0 {
			mode += " (enforce " + textsafe.Join(gen.EnforceServices, ",") + ")"
		} else if len(gen.AuditServices) > 0 {
			mode += " (audit " + textsafe.Join(gen.AuditServices, ",") + ")"
		}
		state := gen.State
		if gen.Restores != 0 {
			state += fmt.Sprintf(", table of gen %d", gen.Restores)
		}
		note := strings.TrimSpace(strings.Join([]string{gen.Reason, gen.Note}, "; "))
		note = strings.Trim(note, "; ")
		fmt.Fprintf(tw, "%s %d\t%s\t%s\t%d\t%s\t%s\t%s\n", mark, gen.N, gen.Time.Local().Format(time.DateTime),
			mode, gen.Elements, state, textsafe.String(gen.Command), textsafe.String(note))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "* the current generation; ELEMENTS: the learned flows in its sets; \"table of gen N\": it put generation N's table back")
	return nil
}

func newRemove(g *cli.Globals) *cobra.Command {
	var reason, pinDir string
	cmd := &cobra.Command{
		Use:   "remove [--netns NAME|PATH] [--reason TEXT] [--pin-dir DIR]",
		Short: "Delete our table (and only ours)",
		Long: `remove deletes table inet egress and records the removal as a generation, so
that restore (at boot) leaves no table either. A pending generation is ended:
its guard has nothing left to roll back.

A DNS policy (dns_policy) stays attached: remove says so, and
"egress-enforce dns-policy remove" detaches it.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			removed, rec, err := removeTable(e, reason)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if removed {
				fmt.Fprintf(w, "removed table inet %s from %s\n", e.Cfg.Table, e.target)
			} else {
				fmt.Fprintf(w, "table inet %s is not installed in %s: nothing to remove\n", e.Cfg.Table, e.target)
			}
			switch {
			case rec != nil:
				fmt.Fprintf(w, "recorded as generation %d (mode removed): history shows it as the current one, and restore leaves no table\n", rec.N)
			case removed:
				fmt.Fprintf(w, "not recorded: there is no store at %s (a restore with another store would put its table back)\n", e.Cfg.DB)
			}
			warnDNSPolicyStays(w, e, pinDir)
			return nil
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().StringVar(&reason, "reason", "", "why: kept in the history")
	cmd.Flags().StringVar(&pinDir, "pin-dir", dnspolicy.DefaultPinRoot, "where a DNS policy would be pinned (a bpf file system): remove says when one stays attached")
	return cmd
}

// removeTable removes the table through the store when there is one (the
// removal is recorded), else directly. A store that cannot be used does
// not keep the table in: it is removed, and the error says restore would
// put it back.
func removeTable(e *env, reason string) (bool, *store.Generation, error) {
	if _, err := os.Stat(e.Cfg.DB); err != nil {
		removed, err := e.kernel.Remove(e.Cfg.Table)
		return removed, nil, err
	}
	st, err := e.WriteStore()
	if err == nil {
		return rollout.Remove(st, e.kernel, e.Cfg.Table, rollout.Options{Command: commandLine(), Reason: reason, Logger: e.Log})
	}
	removed, rerr := e.kernel.Remove(e.Cfg.Table)
	if rerr != nil {
		return false, nil, rerr
	}
	return removed, nil, fmt.Errorf("the table is removed, but not recorded (restore would put it back): %w", err)
}

// withElsewhere adds to an error about a missing generation which other
// targets have generations of the table, and the flag that picks each.
func withElsewhere(st *store.Store, e *env, err error) error {
	if !errors.Is(err, store.ErrNoGeneration) {
		return err
	}
	if others, oerr := rollout.Elsewhere(st, e.target, e.Cfg.Table); oerr == nil {
		if s := nft.Elsewhere(e.Cfg.Table, others); s != "" {
			return fmt.Errorf("%w; %s", err, s)
		}
	}
	return err
}
