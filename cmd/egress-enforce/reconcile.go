package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

// approvePlan marks the flows of an applied plan approved by generation n
// (those not approved before): later learning records new flows as
// candidates for a reviewed reconcile instead.
func approvePlan(st *store.Store, p *enforce.Plan, n uint64, now time.Time) error {
	var keys []store.FlowKey
	for _, s := range p.Sets {
		for _, e := range s.Elements {
			keys = append(keys, store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port})
		}
	}
	return st.SetApproval(keys, func(f *store.Flow) {
		if f.Approved == 0 {
			f.Approved, f.ApprovedAt, f.ApprovedNames = n, now.UTC(), f.Hostnames
			f.Retired = time.Time{}
		}
	})
}

func newReconcile(g *cli.Globals) *cobra.Command {
	var staleAfter, stableAfter time.Duration
	var only, out, reason, deniedRate string
	var asJSON, apply, force, includeDenied bool
	var confirmWithin time.Duration
	cmd := &cobra.Command{
		Use:   "reconcile [--stale-after D] [--min-hits N] [--json] [-o FILE] [--apply [--only add|remove] [--include-denied] [--force] ...]",
		Short: "Propose the next generation: new destinations to add, stale ones to remove",
		Long: `reconcile compares what was learned and observed since the current generation
with that generation's approved baseline, and proposes a change:

  add     candidates: flows the learner recorded since (seen at least --min-hits
          times);
  remove  approved flows not seen for --stale-after (default 30 days);
  renamed approved addresses whose DNS names changed since approval;
  denied  destinations only the monitor saw the table drop or log, never
          learned: listed apart, and added only with --include-denied (any
          user can make the table deny a destination by knocking on it);
          named as the learner names flows: the user's own DNS lookups, or
          those of the resolvers of dns_resolver_users, never another user's.

It prints the proposal per user with names, hits and last seen (--json for
scripts), and -o writes the nft text of the next generation. Per user it shows
when the last new destination appeared and how many appeared each day, and
says whether the soak has converged (no new destination for --stable-after).

--apply applies the proposal through the same path as apply (--mode,
--confirm-within, --enforce-users, --reason) and the same check: a table
that drops is refused for an empty or DNS-cutting baseline unless --force.
--only add or --only remove splits the change. Nothing changes without
--apply.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.Load(cmd)
			if err != nil {
				return err
			}
			if from, _ := cmd.Flags().GetStringArray("from"); len(from) > 0 {
				return fmt.Errorf("--from: reconcile works on this host's store; merge exports with generate or apply --from")
			}
			if only != "" && only != "add" && only != "remove" {
				return fmt.Errorf("--only: %q is not add or remove", only)
			}
			now, err := g.Now()
			if err != nil {
				return err
			}
			opts, err := enforce.OptionsFromConfig(cfg)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			names := config.UserNames{}
			opts.UserName, opts.Source, opts.Now = names.Name, cfg.DB, now
			if err := stagedUsers(cmd, &opts); err != nil {
				return err
			}
			target := enforce.Target{Netns: cfg.Netns}
			st, err := cli.ReadStore(cfg)
			if err != nil {
				return err
			}
			flows, err := st.Flows()
			if err != nil {
				return err
			}
			obs, err := st.Observations()
			if err != nil {
				return err
			}
			keys := make([]store.FlowKey, 0, len(obs))
			for _, o := range obs {
				keys = append(keys, o.FlowKey)
			}
			// Names as the learner gives them: the user's own lookups, or
			// a trusted resolver's; never another user's.
			dnsNames, err := st.FlowNames(keys, cfg.DNSResolverUIDs)
			if err != nil {
				return err
			}
			_, cur, err := enforce.History(st, target, cfg.Table)
			if err != nil {
				return err
			}
			p := enforce.Reconcile(flows, obs, dnsNames, cur, enforce.ReconcileOptions{
				StaleAfter: staleAfter, MinHits: uint64(cfg.MinHits), Only: only, StableAfter: stableAfter, Now: now, UserName: names.Name,
				IncludeDenied: includeDenied,
			})
			// The proposal chose the flows: no further filtering.
			opts.MinHits, opts.Since = 0, 0
			plan := enforce.Build(p.Next(), opts)
			w := cmd.OutOrStdout()
			if out != "" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
				if err != nil {
					return fmt.Errorf("write %s: %w", out, err)
				}
				err = plan.Text(f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return fmt.Errorf("write %s: %w", out, err)
				}
			}
			if asJSON {
				if err := printJSON(w, p); err != nil {
					return err
				}
			} else if err := p.Write(w); err != nil {
				return err
			}
			if !apply {
				return nil
			}
			if p.Empty() {
				fmt.Fprintln(cmd.ErrOrStderr(), "nothing to apply")
				return nil
			}
			if err := guardPlan(plan, nil, force); err != nil {
				return err
			}
			if err := enforce.CheckPlanMark(plan, target); err != nil {
				return err
			}
			rate, err := parseRate(deniedRate)
			if err != nil {
				return err
			}
			if rate > 0 && confirmWithin <= 0 {
				return fmt.Errorf("--rollback-if-denied-rate needs --confirm-within")
			}
			wst, err := cli.WriteStore(cfg)
			if err != nil {
				return err
			}
			if reason == "" {
				reason = fmt.Sprintf("reconcile: %d added, %d removed", len(p.Adding()), len(p.Removals))
			}
			gen, res, err := enforce.ApplyGeneration(plan, target, enforce.RolloutOptions{
				Store: wst, Command: commandLine(), Reason: reason, ConfirmWithin: confirmWithin,
				StartGuard: func(n uint64) (int, error) { return startGuard(cfg, n, rate) },
			})
			if err != nil {
				return err
			}
			added := map[store.FlowKey]enforce.Change{}
			for _, c := range p.Adding() {
				added[enforce.Keys([]enforce.Change{c})[0]] = c
			}
			if err := wst.SetApproval(enforce.Keys(p.Adding()), func(f *store.Flow) {
				if f.Hits == 0 { // a destination only the monitor saw
					c := added[f.FlowKey]
					f.Hits, f.FirstSeen, f.LastSeen, f.Hostnames = c.Hits, c.FirstSeen, c.LastSeen, c.Hostnames
				}
				f.Approved, f.ApprovedAt, f.ApprovedNames, f.Retired = gen.N, now.UTC(), f.Hostnames, time.Time{}
			}); err != nil {
				return err
			}
			if err := wst.SetApproval(enforce.Keys(p.Removals), func(f *store.Flow) {
				f.Approved, f.ApprovedAt, f.ApprovedNames, f.Retired = 0, time.Time{}, nil, now.UTC()
			}); err != nil {
				return err
			}
			fmt.Fprintf(w, "applied generation %d: %s mode, %d elements (%d added, %d removed), in %s\n",
				gen.N, plan.Mode, res.Elements, len(p.Adding()), len(p.Removals), res.Took.Round(time.Millisecond))
			return nil
		},
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	f := cmd.Flags()
	f.DurationVar(&staleAfter, "stale-after", enforce.DefaultStaleAfter, "propose removing approved flows not seen for this long")
	f.DurationVar(&stableAfter, "stable-after", enforce.DefaultStableAfter, "a user has converged when no new destination appeared for this long")
	f.StringVar(&only, "only", "", "with --apply: apply only the additions (add) or only the removals (remove)")
	f.StringVarP(&out, "output", "o", "", "write the nft text of the next generation to FILE")
	f.BoolVar(&asJSON, "json", false, "print the proposal as JSON")
	f.BoolVar(&apply, "apply", false, "apply the proposal as a new generation")
	f.BoolVar(&includeDenied, "include-denied", false, "add the destinations only the monitor saw denied (never learned) too")
	f.BoolVar(&force, "force", false, "with --apply: apply a table that drops even when the baseline is empty or would cut off DNS")
	f.DurationVar(&confirmWithin, "confirm-within", 0, "with --apply: roll back unless confirmed within this long")
	f.StringVar(&deniedRate, "rollback-if-denied-rate", "", "with --confirm-within: roll back early above this drop rate (e.g. 50/s)")
	f.StringVar(&reason, "reason", "", "why: kept in the history")
	return cmd
}
