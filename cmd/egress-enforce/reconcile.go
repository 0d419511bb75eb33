package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
)

// reconcileFlags are reconcile's own flags.
type reconcileFlags struct {
	staleAfter, stableAfter time.Duration
	only, out               string
	asJSON, apply           bool
	includeDenied           bool
	rolloutFlags
}

func newReconcile(g *cli.Globals) *cobra.Command {
	var r reconcileFlags
	cmd := &cobra.Command{
		Use:   "reconcile [--netns NAME|PATH] [--stale-after D] [--stable-after D] [--min-hits N] [--json] [-o FILE] [--apply [--only add|remove] [--include-denied] [--force] ...]",
		Short: "Propose the next generation: new destinations to add, stale ones to remove",
		Long: `reconcile compares what was learned and observed since the current generation
with that generation's approved baseline, and proposes a change. Generations
belong to a network namespace: the current one is that of --netns (default
this host's), and the first line names it; when it has none, the line says
which namespaces have generations and the --netns that picks each.

  add     candidates: flows the learner recorded since (seen at least --min-hits
          times); with match service or user,service, also approved
          destinations seen since from a service the current generation
          does not allow them for ("new service"), or from outside any
          service ("outside services"): apply keeps them out until then;
  remove  approved flows not seen for --stale-after (default 30 days);
  renamed approved addresses whose DNS names changed since approval;
  denied  destinations only the monitor saw the table drop or log, never
          learned: listed apart, and added only with --include-denied (any
          user can make the table deny a destination by knocking on it);
          named as the learner names flows: the user's own DNS lookups, or
          those of the resolvers of dns_resolver_users, never another user's.
  dns     names dns_policy stopped or audited (dns-policy watch records
          them), listed apart for dns_allow; names under a parent domain
          with a tunnelling signature are not proposed. Never applied.

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
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			if from, _ := cmd.Flags().GetStringArray("from"); len(from) > 0 {
				return fmt.Errorf("--from: reconcile works on this host's store; merge exports with generate or apply --from")
			}
			if cmd.Flags().Changed("since") {
				return fmt.Errorf("--since: reconcile keeps every flow seen; --stale-after proposes removing those not seen for that long")
			}
			if r.only != "" && r.only != "add" && r.only != "remove" {
				return fmt.Errorf("--only: %q is not add or remove", r.only)
			}
			p, next, err := propose(cmd, e, &r)
			if err != nil {
				return err
			}
			dns, err := dnsAdditionsFor(e)
			if err != nil {
				return err
			}
			if r.asJSON {
				err = printJSON(cmd.OutOrStdout(), struct {
					*baseline.Proposal
					DNSNames *dnsDenied `json:"dns_names,omitempty"`
				}{p, dns})
			} else if err = p.Write(cmd.OutOrStdout()); err == nil && dns != nil {
				dns.writeAdditions(cmd.OutOrStdout())
			}
			if err != nil || !r.apply {
				return err
			}
			return applyProposal(cmd, e, p, next, r.rolloutFlags)
		}),
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	f := cmd.Flags()
	// Plan flags reconcile refuses (it reads this host's store, and keeps
	// every flow seen): not shown.
	_ = f.MarkHidden("from")
	_ = f.MarkHidden("since")
	f.DurationVar(&r.staleAfter, "stale-after", baseline.DefaultStaleAfter, "propose removing approved flows not seen for this long")
	f.DurationVar(&r.stableAfter, "stable-after", baseline.DefaultStableAfter, "a user has converged when no new destination appeared for this long")
	f.StringVar(&r.only, "only", "", "with --apply: apply only the additions (add) or only the removals (remove)")
	f.StringVarP(&r.out, "output", "o", "", "write the nft text of the next generation to FILE")
	f.BoolVar(&r.asJSON, "json", false, "print the proposal as JSON")
	f.BoolVar(&r.apply, "apply", false, "apply the proposal as a new generation")
	f.BoolVar(&r.includeDenied, "include-denied", false, "add the destinations only the monitor saw denied (never learned) too")
	r.add(f, "with --apply: apply a table that drops even when the baseline is empty or would cut off DNS",
		"with --apply: roll back unless confirmed within this long",
		"with --confirm-within: roll back early above this drop rate (e.g. 50/s)",
		"why: kept in the history")
	return cmd
}

// propose reads the store and proposes the next generation, and builds
// its plan (written to -o when given).
func propose(cmd *cobra.Command, e *env, r *reconcileFlags) (*baseline.Proposal, *plan.Plan, error) {
	opts, err := planOptions(cmd, e)
	if err != nil {
		return nil, nil, err
	}
	st, err := e.ReadStore()
	if err != nil {
		return nil, nil, err
	}
	_, cur, err := rollout.History(st, e.target, e.Cfg.Table)
	if err != nil {
		return nil, nil, err
	}
	granted, err := grantedNow(st, e, opts)
	if err != nil {
		return nil, nil, err
	}
	p, err := baseline.ReconcileStore(st, e.Cfg.DNSResolverUIDs, cur, baseline.ReconcileOptions{
		StaleAfter: r.staleAfter, MinHits: uint64(e.Cfg.MinHits), Only: r.only, StableAfter: r.stableAfter, Now: opts.Now,
		UserName: config.UserNames{}.Name, IncludeDenied: r.includeDenied, ServiceDepth: opts.ServiceDepth, Granted: granted,
	})
	if err != nil {
		return nil, nil, err
	}
	p.Target, p.Table = e.target.Path(), e.Cfg.Table
	if p.Elsewhere, err = rollout.Elsewhere(st, e.target, e.Cfg.Table); err != nil {
		return nil, nil, err
	}
	p.Elsewhere = nonNil(p.Elsewhere)
	// The proposal chose the flows: no further filtering.
	opts.MinHits, opts.Since = 0, 0
	next := plan.Build(p.Next(), opts)
	if r.out != "" {
		if err := writeScript(r.out, next); err != nil {
			return nil, nil, err
		}
	}
	return p, next, nil
}

// writeScript writes the nft script of p to path.
func writeScript(path string, p *plan.Plan) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = p.Text(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// applyProposal applies the next generation through apply's path and
// records what it approved and retired.
func applyProposal(cmd *cobra.Command, e *env, p *baseline.Proposal, next *plan.Plan, r rolloutFlags) error {
	if p.Empty() {
		fmt.Fprintln(cmd.ErrOrStderr(), "nothing to apply")
		return nil
	}
	if err := preApply(e, next, nil, r.force, false); err != nil {
		return err
	}
	if r.reason == "" {
		r.reason = fmt.Sprintf("reconcile: %d added, %d removed", len(p.Adding()), len(p.Removals))
	}
	a, err := rollOut(e, next, r, false, nil, nil)
	if err != nil {
		return err
	}
	if err := p.Approve(a.st, a.gen.N, p.Now); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "applied generation %d: %s mode, %d elements (%d added, %d removed), in %s\n",
		a.gen.N, next.Mode, a.res.Elements, len(p.Adding()), len(p.Removals), a.res.Took.Round(time.Millisecond))
	return nil
}
