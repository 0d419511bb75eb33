package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

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
// session of its own, its output in a log next to the store, and lets it
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
	args := []string{"confirm-guard", "--db", cfg.DB, "--table", cfg.Table, "--generation", strconv.FormatUint(n, 10)}
	if cfg.Netns != "" {
		args = append(args, "--netns", enforce.Target{Netns: cfg.Netns}.Path())
	}
	if rate > 0 {
		args = append(args, "--rollback-if-denied-rate", strconv.FormatFloat(rate, 'g', -1, 64))
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

func newConfirmGuard(g *cli.Globals) *cobra.Command {
	var gen uint64
	var rate float64
	cmd := &cobra.Command{
		Use:    "confirm-guard --generation N",
		Short:  "Roll generation N back unless it is confirmed in time (started by apply --confirm-within)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Detached from any terminal; a stray signal of the session
			// that started it must not stop it.
			signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
			cfg, log, err := g.Load(cmd)
			if err != nil {
				return err
			}
			return enforce.GuardGeneration(cmd.Context(), cfg.DB, enforce.Target{Netns: cfg.Netns}, gen,
				enforce.GuardOptions{MaxDeniedRate: rate, Logger: log})
		},
	}
	netnsFlag(cmd, g)
	cmd.Flags().Uint64Var(&gen, "generation", 0, "the pending generation")
	cmd.Flags().Float64Var(&rate, "rollback-if-denied-rate", 0, "roll back early above this many drops per second")
	_ = cmd.MarkFlagRequired("generation")
	return cmd
}

func newConfirm(g *cli.Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "confirm [--netns NAME|PATH]",
		Short: "Keep the table applied with --confirm-within (stop its automatic rollback)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.Load(cmd)
			if err != nil {
				return err
			}
			st, err := cli.WriteStore(cfg)
			if err != nil {
				return err
			}
			gen, err := enforce.Confirm(st, enforce.Target{Netns: cfg.Netns}, cfg.Table)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "confirmed generation %d (%s mode); it stays\n", gen.N, gen.Mode)
			return nil
		},
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
table. "egress-enforce history" lists the generations.

Only a generation that was applied and kept (applied, or confirmed in time)
can be put back: never a pending, rolled-back or failed one. A table that
drops traffic goes through the same check as apply --mode enforce (an empty
baseline, or one that would cut off DNS, is refused); --force puts it back
anyway. A pending current generation is marked rolled back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.Load(cmd)
			if err != nil {
				return err
			}
			st, err := cli.WriteStore(cfg)
			if err != nil {
				return err
			}
			if reason == "" {
				reason = "rollback by hand"
			}
			gen, err := enforce.Rollback(st, enforce.Target{Netns: cfg.Netns}, cfg.Table, enforce.RollbackOptions{
				To: to, Command: commandLine(), Reason: reason, Force: force, Logger: log})
			if err != nil {
				return err
			}
			if gen.Mode == enforce.ModeRemoved {
				fmt.Fprintf(cmd.OutOrStdout(), "no earlier generation: removed table inet %s (generation %d)\n", cfg.Table, gen.N)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored generation %d as generation %d (%s mode, %d elements)\n", gen.Restores, gen.N, gen.Mode, gen.Elements)
			return nil
		},
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
		Short: "List the generations applied to our table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.Load(cmd)
			if err != nil {
				return err
			}
			st, err := cli.ReadStore(cfg)
			if err != nil {
				return err
			}
			gens, cur, err := enforce.History(st, enforce.Target{Netns: cfg.Netns}, cfg.Table)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, struct {
					Current     uint64             `json:"current"`
					Generations []store.Generation `json:"generations"`
				}{cur, nonNil(gens)})
			}
			if len(gens) == 0 {
				fmt.Fprintf(w, "no generation of table inet %s in %s\n", cfg.Table, enforce.Target{Netns: cfg.Netns})
				return nil
			}
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
				}
				state := gen.State
				if gen.Restores != 0 {
					state += fmt.Sprintf(", restores %d", gen.Restores)
				}
				note := strings.TrimSpace(strings.Join([]string{gen.Reason, gen.Note}, "; "))
				note = strings.Trim(note, "; ")
				fmt.Fprintf(tw, "%s %d\t%s\t%s\t%d\t%s\t%s\t%s\n", mark, gen.N, gen.Time.Local().Format(time.DateTime),
					mode, gen.Elements, state, gen.Command, note)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(w, "* the current generation")
			return nil
		},
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the generations as JSON")
	return cmd
}

func uids(u []uint32) string {
	names := config.UserNames{}
	s := make([]string, len(u))
	for i, v := range u {
		s[i] = names.Name(v)
	}
	return strings.Join(s, ",")
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
