package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/dnspolicy"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/options"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
)

func newRestore(g *cli.Globals) *cobra.Command {
	var force, asJSON bool
	var pinDir string
	cmd := &cobra.Command{
		Use:   "restore [--netns NAME|PATH] [--boot-policy open|closed] [--force] [--json] [--pin-dir DIR]",
		Short: "Put the current generation's table back (at boot: nftables keeps nothing)",
		Long: `restore applies the current generation again: the newest one that was applied
or confirmed. deploy/systemd/egress-enforce-restore.service runs it at boot,
before the network comes up.

A generation still pending (applied with --confirm-within) whose guard is gone
counts as not confirmed: it is marked rolled back ("not confirmed before
restart") and the kept generation before it is put back. Restore records
what it put back as a new generation.

Every apply also writes the table beside the store (<db>.applied/: the plan as
JSON and as an nft script). When the store cannot be read, restore puts back
what those files name, and says so at error level.

A table that drops traffic goes through the same check as apply --mode enforce
(--force skips it). When there is no generation to put back, or its table is
refused or cannot be applied, boot_policy decides: open (no table) or closed
(a minimal table: replies, loopback, DNS and NTP servers, always_allow; the
rest is dropped and logged). Any failure exits with status 1, after the safer
state is in place.

With dns_policy audit or enforce, restore then loads the DNS policy again (a
reboot empties the bpf file system) from the store's learned questions, as
apply does, and exits 1 saying so when it cannot.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			cfg := e.Cfg
			o := rollout.RestoreOptions{DB: cfg.DB, Kernel: e.kernel, Table: cfg.Table,
				Force: force, BootPolicy: cfg.BootPolicy, Command: commandLine(), Logger: e.Log}
			if cfg.BootPolicy == rollout.BootClosed {
				var err error
				if o.Closed, err = closedPlan(cfg); err != nil {
					return err
				}
			}
			res, rerr := rollout.Restore(o)
			var err error
			if asJSON {
				err = printJSON(cmd.OutOrStdout(), res)
			} else {
				writeRestore(cmd.OutOrStdout(), cfg, e.target, res)
			}
			return errors.Join(rerr, err, ensureDNSPolicy(cmd, e, pinDir, force, asJSON))
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().StringVar(&pinDir, "pin-dir", dnspolicy.DefaultPinRoot, "with dns_policy audit or enforce: where the DNS policy is pinned (a bpf file system)")
	cmd.Flags().String("boot-policy", "open", "with no generation to put back: open (no table) or closed (DNS, NTP and loopback only)")
	g.Loader.Bind("boot_policy", "boot-policy")
	cmd.Flags().BoolVar(&force, "force", false, "put the table back even when the pre-apply check refuses it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was done as JSON")
	return cmd
}

// closedPlan is the minimal table of boot_policy closed, from the
// configuration.
func closedPlan(cfg *config.Config) (*plan.Plan, error) {
	opts, err := options.FromConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	opts.UserName = config.UserNames{}.Name
	return plan.ClosedPlan(opts), nil
}

func writeRestore(w io.Writer, cfg *config.Config, t nft.Target, res *rollout.RestoreResult) {
	for _, n := range res.RolledBack {
		fmt.Fprintf(w, "generation %d was pending and its guard is gone: rolled back (not confirmed before restart)\n", n)
	}
	from := ""
	if res.FromFiles != "" {
		from = " from " + res.FromFiles + " (the store cannot be read)"
	}
	switch res.Action {
	case rollout.RestoreRestored:
		as := ""
		if res.Generation != 0 {
			as = fmt.Sprintf(" as generation %d", res.Generation)
		}
		fmt.Fprintf(w, "restored generation %d%s%s: table inet %s in %s, %s mode, %d elements, in %s\n",
			res.Restores, as, from, cfg.Table, t, res.Mode, res.Elements, res.Took.Round(time.Millisecond))
	case rollout.RestoreRemoved:
		fmt.Fprintf(w, "generation %d removed table inet %s%s: nothing to restore\n", res.Restores, cfg.Table, from)
	case rollout.RestoreClosed:
		fmt.Fprintf(w, "boot_policy closed: applied the minimal table inet %s in %s (DNS, NTP, loopback; the rest is dropped and logged)\n", cfg.Table, t)
	case rollout.RestoreOpen:
		fmt.Fprintf(w, "no table restored in %s: boot_policy open, the host's egress is open\n", t)
	}
}
