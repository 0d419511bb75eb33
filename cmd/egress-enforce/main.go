// Command egress-enforce turns the baseline learned by egress-learn into an
// nftables allow-list table of its own, shows it, diffs it against the
// kernel, and applies it atomically: first in audit mode (log only), then
// in enforce mode (default drop).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		slog.Error(err.Error())
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "egress-enforce",
		Short: "Turn the learned egress baseline into an nftables allow-list",
		Long: `egress-enforce builds one nftables table of its own (default inet egress) from
the baseline egress-learn recorded, and never touches any other table. Its
output chain allows replies, loopback, IPv6 neighbour discovery, the DNS
servers of resolv.conf, NTP servers and always_allow entries, then every
learned (user, address, protocol, port) through one set lookup per family;
what is left is counted and logged (NFLOG), and dropped in enforce mode.

Roll out in two steps: apply --mode audit (nothing is blocked; watch the
default rule's counter and log), then apply --mode enforce.

` + cli.ConfigHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := cli.NewGlobals(root)
	pf := root.PersistentFlags()
	pf.String("table", enforce.DefaultTable, "name of our table (family inet)")
	g.Loader.Bind("table", "table")
	root.AddCommand(newGenerate(g), newApply(g), newStatus(g), newDiff(g), newRemove(g),
		newConfirm(g), newHistory(g), newRollback(g), newConfirmGuard(g), newRestore(g), newWatch(g), newDenied(g), newReconcile(g), newFollow(g),
		newPrune(g))
	return root
}

// planFlags are the flags that shape a plan.
func planFlags(cmd *cobra.Command, g *cli.Globals) {
	f := cmd.Flags()
	f.String("mode", "audit", "audit (log only) or enforce (log and drop)")
	f.StringSlice("enforce-users", nil, "with --mode enforce: enforce only for these users (names or UIDs); audit everyone else")
	f.StringSlice("audit-users", nil, "with --mode enforce: keep these users (names or UIDs) in audit; enforce everyone else")
	f.Int("min-hits", 1, "leave out flows seen fewer times")
	f.String("since", "", "leave out flows not seen within this long (e.g. 720h); default: keep all")
	f.StringArray("from", nil, "build from these exports of \"egress-learn export\" (one per host; repeat) instead of the store")
	g.Loader.Bind("mode", "mode")
	g.Loader.Bind("min_hits", "min-hits")
	g.Loader.Bind("since", "since")
}

func netnsFlag(cmd *cobra.Command, g *cli.Globals) {
	cmd.Flags().String("netns", "", "network namespace: a name under /run/netns or a path such as /proc/PID/ns/net (default: this host's); "+
		"with a name, the DNS servers come from /etc/netns/NAME/resolv.conf when it exists")
	g.Loader.Bind("netns", "netns")
}

// dnsServers says where the allowed DNS servers came from, for the log
// and JSON: a namespace's resolv.conf is not the host's.
type dnsServers struct {
	ResolvConf string       `json:"resolv_conf"`
	Servers    []netip.Addr `json:"dns_servers"`
}

func dnsOf(p *enforce.Plan) dnsServers {
	return dnsServers{p.ResolvConf, nonNil(p.DNSServers())}
}

// diffJSON is a diff with where the plan's DNS servers came from.
type diffJSON struct {
	*enforce.Diff
	dnsServers
}

// guardPlan runs the pre-apply check of every path that can drop; --force
// turns a refusal into a warning.
func guardPlan(p *enforce.Plan, baselineErr error, force bool) error {
	if err := enforce.Guard(p, baselineErr); err != nil {
		if !force {
			return err
		}
		slog.Warn("--force: " + err.Error())
	}
	return nil
}

// built is a plan with what it was built from.
type built struct {
	plan        *enforce.Plan
	opts        enforce.Options
	baselineErr error
	cfg         *config.Config
}

// buildPlan reads the baseline and builds the plan. A baseline that cannot
// be read is returned in baselineErr with an empty plan, for the guard.
func buildPlan(cmd *cobra.Command, g *cli.Globals) (*built, error) {
	cfg, log, err := g.Load(cmd)
	if err != nil {
		return nil, err
	}
	opts, err := enforce.OptionsFromConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	log.Info("dns servers", "resolv_conf", opts.ResolvConf, "servers", fmt.Sprint(opts.DNSServers))
	names := config.UserNames{}
	opts.UserName = names.Name
	opts.Source = cfg.DB
	if err := stagedUsers(cmd, &opts); err != nil {
		return nil, err
	}
	if opts.Now, err = g.Now(); err != nil {
		return nil, err
	}
	if from, _ := cmd.Flags().GetStringArray("from"); len(from) > 0 {
		var exports []*store.Export
		var hosts []string
		for _, f := range from {
			e, warnings, err := enforce.ReadExport(f)
			if err != nil {
				return nil, err
			}
			for _, w := range warnings {
				slog.Warn(w)
			}
			exports = append(exports, e)
			hosts = append(hosts, e.Host)
		}
		m := enforce.Merge(exports)
		for _, w := range m.Warnings {
			slog.Warn(w)
		}
		opts.Hosts = m.Hosts
		opts.Source = fmt.Sprintf("%d exports (hosts %s)", len(exports), strings.Join(hosts, ", "))
		return &built{plan: enforce.Build(m.Flows, opts), opts: opts, cfg: cfg}, nil
	}
	var flows []store.Flow
	st, err := cli.ReadStore(cfg)
	if err == nil {
		flows, err = st.Flows()
	}
	return &built{plan: enforce.Build(enforce.BaselineFlows(flows), opts), opts: opts, baselineErr: err, cfg: cfg}, nil
}

// stagedUsers reads --enforce-users and --audit-users into opts.
func stagedUsers(cmd *cobra.Command, opts *enforce.Options) error {
	for flag, dst := range map[string]*[]uint32{"enforce-users": &opts.EnforceUIDs, "audit-users": &opts.AuditUIDs} {
		users, _ := cmd.Flags().GetStringSlice(flag)
		for _, u := range users {
			uid, err := config.LookupUID(u)
			if err != nil {
				return fmt.Errorf("--%s: %w", flag, err)
			}
			*dst = append(*dst, uid)
		}
	}
	return opts.Check()
}

// addrList writes addresses for people: "none" for none.
func addrList(a []netip.Addr) string {
	if len(a) == 0 {
		return "none"
	}
	s := make([]string, len(a))
	for i, v := range a {
		s[i] = v.String()
	}
	return strings.Join(s, ", ")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newGenerate(g *cli.Globals) *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "generate [--db PATH] [--mode audit|enforce] [--netns NAME] [-o FILE] [--json]",
		Short: "Print the nft script (or the plan as JSON) built from the baseline",
		Long: `generate prints the table egress-enforce would apply, as an nft script that
"nft -f" loads (it replaces the table atomically), for review and version
control. Every set element carries a comment with its hits, last-seen date,
processes and hostnames. --json prints the plan instead.

--netns NAME builds the table for that namespace: its DNS servers come from
/etc/netns/NAME/resolv.conf when it exists (what "ip netns exec NAME" shows
its processes), else /etc/resolv.conf; a configured resolv_conf wins. The
script's header and the JSON say which file was read.

--from reads exports of other hosts; each is checked (host and user names,
addresses without zones, protocols) and refused if it holds anything else.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := buildPlan(cmd, g)
			if err != nil {
				return err
			}
			if b.baselineErr != nil {
				return b.baselineErr
			}
			w := cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
				if err != nil {
					return fmt.Errorf("write %s: %w", out, err)
				}
				defer f.Close()
				w = f
			}
			if asJSON {
				err = printJSON(w, b.plan)
			} else {
				err = b.plan.Text(w)
			}
			if err != nil {
				return fmt.Errorf("write plan: %w", err)
			}
			return nil
		},
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of standard output")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

func newApply(g *cli.Globals) *cobra.Command {
	var dryRun, force, asJSON bool
	var confirmWithin time.Duration
	var deniedRate, reason string
	cmd := &cobra.Command{
		Use:   "apply [--db PATH] [--mode audit|enforce] [--netns NAME|PATH] [--dry-run] [--force]",
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
--audit-users is the reverse. One table, one datapath.

Every apply is recorded as a generation in the store (history, rollback).
--confirm-within 2m makes it commit-confirmed: unless "egress-enforce confirm"
runs within 2 minutes, the previous generation is put back. A guard process
of its own does it, detached from the terminal: it still happens if the
session that ran apply dies or apply is killed. --rollback-if-denied-rate 50/s
also rolls back early when the table drops more than 50 packets a second.
While a generation is pending, another apply is refused; --force rolls the
pending one back first. Applies, rollbacks and restores wait for each other
(a lock beside the store).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := buildPlan(cmd, g)
			if err != nil {
				return err
			}
			target := enforce.Target{Netns: b.cfg.Netns}
			if err := guardPlan(b.plan, b.baselineErr, force); err != nil {
				return err
			}
			if b.baselineErr != nil && !b.plan.Drops() {
				return b.baselineErr
			}
			if err := enforce.CheckPlanMark(b.plan, target); err != nil {
				if !force {
					return fmt.Errorf("%w (pass --force to apply anyway)", err)
				}
				slog.Warn("--force: " + err.Error())
			}
			w := cmd.OutOrStdout()
			if dryRun {
				d, err := enforce.DiffKernel(b.plan, target)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(w, diffJSON{d, dnsOf(b.plan)})
				}
				fmt.Fprintln(w, "dry run: nothing applied")
				return d.Write(w)
			}
			rate, err := parseRate(deniedRate)
			if err != nil {
				return err
			}
			if rate > 0 && confirmWithin <= 0 {
				return fmt.Errorf("--rollback-if-denied-rate needs --confirm-within")
			}
			st, err := cli.WriteStore(b.cfg)
			if err != nil {
				return fmt.Errorf("record the generation: %w", err)
			}
			gen, res, err := enforce.ApplyGeneration(b.plan, target, enforce.RolloutOptions{
				Store: st, Command: commandLine(), Reason: reason, ConfirmWithin: confirmWithin, Force: force,
				StartGuard: func(n uint64) (int, error) { return startGuard(b.cfg, n, rate) },
			})
			if err != nil {
				return err
			}
			if err := approvePlan(st, b.plan, gen.N, b.opts.Now); err != nil {
				return err
			}
			if asJSON {
				return printJSON(w, struct {
					Generation uint64 `json:"generation"`
					State      string `json:"state"`
					*enforce.ApplyResult
					dnsServers
				}{gen.N, gen.State, res, dnsOf(b.plan)})
			}
			fmt.Fprintf(w, "applied generation %d: table inet %s in %s, %s mode, %d elements, %d rules, in %s; read back and verified\n",
				gen.N, b.plan.Table, target, b.plan.Mode, res.Elements, res.Rules, res.Took.Round(time.Millisecond))
			if confirmWithin > 0 {
				back := fmt.Sprintf("generation %d", gen.RollbackTo)
				if gen.RollbackTo == 0 {
					back = "no table (it will be removed)"
				}
				fmt.Fprintf(w, "run \"egress-enforce confirm\" before %s (within %s), or the guard (pid %d) rolls back to %s\n",
					gen.Deadline.Local().Format(time.TimeOnly), confirmWithin, gen.GuardPID, back)
			}
			return nil
		},
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "show what would change, apply nothing")
	f.BoolVar(&force, "force", false, "enforce even when the baseline is missing, empty or would cut off DNS; roll back a pending generation first")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.DurationVar(&confirmWithin, "confirm-within", 0, "roll back unless \"egress-enforce confirm\" runs within this long (e.g. 2m)")
	f.StringVar(&deniedRate, "rollback-if-denied-rate", "", "with --confirm-within: roll back early when drops exceed this rate (e.g. 50/s)")
	f.StringVar(&reason, "reason", "", "why this apply: kept in the history")
	return cmd
}

func newStatus(g *cli.Globals) *cobra.Command {
	var asJSON, count bool
	cmd := &cobra.Command{
		Use:   "status [--netns NAME|PATH] [--json]",
		Short: "Show whether our table is installed, its mode, set sizes and the default counter",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.Load(cmd)
			if err != nil {
				return err
			}
			target := enforce.Target{Netns: cfg.Netns}
			st, err := enforce.ReadStatus(target, cfg.Table, count)
			if err != nil {
				return err
			}
			if db, err := store.Open(cfg.DB, store.Options{LockTimeout: 2 * time.Second}); err == nil {
				st.Follow, _ = enforce.ReadFollowStats(db, target, cfg.Table)
			}
			dns := dnsServers{ResolvConf: enforce.ResolvConfFor(cfg.ResolvConf, cfg.Netns)}
			dns.Servers, err = enforce.ResolvConfServers(dns.ResolvConf)
			if err != nil {
				return err
			}
			dns.Servers = nonNil(dns.Servers)
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, struct {
					*enforce.Status
					dnsServers
				}{st, dns})
			}
			fmt.Fprintf(w, "resolvers of %s: %s (from %s)\n", target, addrList(dns.Servers), dns.ResolvConf)
			if !st.Present {
				fmt.Fprintf(w, "table inet %s is not installed in %s\n", st.Table, target)
				return nil
			}
			fmt.Fprintf(w, "table inet %s in %s: %s mode (chain policy %s)\n", st.Table, target, st.Mode, st.Policy)
			switch {
			case len(st.EnforceUIDs) > 0:
				fmt.Fprintf(w, "  enforced: %s; audited: everyone else\n", uids(st.EnforceUIDs))
			case len(st.AuditUIDs) > 0:
				fmt.Fprintf(w, "  audited: %s; enforced: everyone else\n", uids(st.AuditUIDs))
			}
			for _, s := range st.Sets {
				how := "as applied"
				if s.Counted {
					how = "counted"
				}
				fmt.Fprintf(w, "  set %s: %d elements (%s)\n", s.Name, s.Elements, how)
			}
			fmt.Fprintf(w, "  rules: %d\n", len(st.Rules))
			if st.Default != nil {
				fmt.Fprintf(w, "  default rules: %d packets dropped (%d bytes), %d logged, not blocked (audit)\n",
					st.Dropped.Packets, st.Dropped.Bytes, st.Audited.Packets)
			}
			if st.DropsLogged != nil || st.AuditsLogged != nil {
				var dl, al enforce.Counter
				if st.DropsLogged != nil {
					dl = *st.DropsLogged
				}
				if st.AuditsLogged != nil {
					al = *st.AuditsLogged
				}
				fmt.Fprintf(w, "  under the log's rate limits: %d of the dropped and %d of the audited packets were logged\n", dl.Packets, al.Packets)
			}
			if f := st.Follow; f != nil {
				fmt.Fprintf(w, "  follower (at %s): %d name rules, %d answers used, %d addresses added, %d refreshed, %d left out by the bound\n",
					f.Updated.Local().Format(time.DateTime), f.Rules, f.Accepted, f.Added, f.Refreshed, f.BoundDropped)
				fmt.Fprintf(w, "    ignored answers: %d not from a resolver, %d with no matching query, %d with another question, %d malformed, %d in another network namespace; %d records of other owners\n",
					f.NotResolver, f.NoQuery, f.Mismatch, f.Malformed, f.OtherNetns, f.OwnerMismatch)
				fmt.Fprintf(w, "    mark check: %d packets dropped (a mark no authorization covers); queries: %d over their user's share, %d expired unanswered; %d TTLs capped\n",
					f.MarkDropped, f.OverShare, f.QueriesExpired, f.TTLCapped)
				fmt.Fprintf(w, "    answer-to-set latency p50 %.0f us, p99 %.0f us; %d connects let through by the mark before their element was in\n",
					f.LatencyP50, f.LatencyP99, f.Marked)
			}
			return nil
		},
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	cmd.Flags().BoolVar(&count, "count", false, "count set elements in the kernel instead of reading the set sizes apply wrote (slow for large sets)")
	return cmd
}

func newDiff(g *cli.Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff [--db PATH] [--mode audit|enforce] [--netns NAME|PATH] [--json]",
		Short: "Show what apply would change against the table in the kernel",
		Long: `diff compares the table apply would build with the one in the kernel: set
elements added and removed (with the comment saying why each is there), rules
added and removed, and a mode change. Exit status 0 either way.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := buildPlan(cmd, g)
			if err != nil {
				return err
			}
			if b.baselineErr != nil {
				return b.baselineErr
			}
			d, err := enforce.DiffKernel(b.plan, enforce.Target{Netns: b.cfg.Netns})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), diffJSON{d, dnsOf(b.plan)})
			}
			return d.Write(cmd.OutOrStdout())
		},
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the diff as JSON")
	return cmd
}

func newRemove(g *cli.Globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "remove [--netns NAME|PATH] [--reason TEXT]",
		Short: "Delete our table (and only ours)",
		Long: `remove deletes table inet egress and records the removal as a generation, so
that restore (at boot) leaves no table either. A pending generation is ended:
its guard has nothing left to roll back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.Load(cmd)
			if err != nil {
				return err
			}
			target := enforce.Target{Netns: cfg.Netns}
			removed, err := removeTable(cfg, log, target, reason)
			if err != nil {
				return err
			}
			if removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed table inet %s from %s\n", cfg.Table, target)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "table inet %s is not installed in %s: nothing to remove\n", cfg.Table, target)
			}
			return nil
		},
	}
	netnsFlag(cmd, g)
	cmd.Flags().StringVar(&reason, "reason", "", "why: kept in the history")
	return cmd
}

// removeTable removes the table through the store when there is one (the
// removal is recorded), else directly. A store that cannot be used does
// not keep the table in: it is removed, and the error says restore would
// put it back.
func removeTable(cfg *config.Config, log *slog.Logger, target enforce.Target, reason string) (bool, error) {
	if _, err := os.Stat(cfg.DB); err != nil {
		return enforce.Remove(target, cfg.Table)
	}
	st, err := cli.WriteStore(cfg)
	if err == nil {
		var removed bool
		removed, _, err = enforce.RemoveGeneration(st, target, cfg.Table, enforce.RolloutOptions{Command: commandLine(), Reason: reason, Logger: log})
		return removed, err
	}
	removed, rerr := enforce.Remove(target, cfg.Table)
	if rerr != nil {
		return false, rerr
	}
	return removed, fmt.Errorf("the table is removed, but not recorded (restore would put it back): %w", err)
}
