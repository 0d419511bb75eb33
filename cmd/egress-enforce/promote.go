package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/coverage"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/promote"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

var promoteHelp = `promote says, for each user, whether it is ready to leave audit for
enforcement, from evidence only:

  quiet      no new destination first seen for --quiet-for (default 7 days),
             and no flow outside the table (a candidate) seen in that time or
             since the current generation;
  audited    no packet of the user audited (or dropped) by the table in that
             time, as "egress-enforce watch" recorded it. The watch must have
             been recording the whole time, and a table logging: a stretch
             without a record of the monitor (over 2 minutes), without a
             table, or with packets the monitor could not attribute to a user
             (its bounds, lost log messages, packets over audit_log_rate) is
             missing evidence ("no monitor data"), and keeps every user in
             audit;
  jobs       every scheduled job that runs as the user (a cron line's user, a
             timer's service's User=, root without one) seen during the soak
             (see "egress-learn coverage"; coverage_* settings).

It lists every user the baseline, the monitor, the staged sets and the jobs
name, enforced or audited, and for each audited one that is not ready the
reasons, naming the destinations and jobs. --json prints the same for scripts.

--apply enforces the ready users: the current generation's table, same
allow-list, with the ready users added to the enforced ones (apply
--enforce-users, grown), or removed from the audited ones when the table
enforces all but some (none left: enforce mode). It goes through the same path
as apply: the pre-apply check (--force), the lock, the refusal while a
generation is pending, a generation in the history (--reason), and with
--confirm-within a guard that rolls back unless "egress-enforce confirm" runs
in time (--rollback-if-denied-rate rolls back early). Users not named stay
as they are.`

// promoteFlags are promote's own flags.
type promoteFlags struct {
	quietFor      time.Duration
	asJSON, apply bool
	rolloutFlags
}

func newPromote(g *cli.Globals) *cobra.Command {
	var f promoteFlags
	cmd := &cobra.Command{
		Use:   "promote [--quiet-for D] [--json] [--netns NAME|PATH] [--apply [--confirm-within D [--rollback-if-denied-rate N/s]] [--reason TEXT] [--force]]",
		Short: "Say which audited users are ready for enforcement, and why the others are not; --apply enforces them",
		Long:  promoteHelp,
		Args:  cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			if err := f.check(cmd); err != nil {
				return err
			}
			rep, cur, err := evaluatePromotion(cmd, e, f.quietFor)
			if err != nil {
				return err
			}
			if !f.asJSON {
				if err := rep.Write(cmd.OutOrStdout()); err != nil {
					return err
				}
			}
			var a *applied
			var next *plan.Plan
			if f.apply && rep.Next != nil {
				if a, next, err = applyPromotion(e, rep, cur, f.rolloutFlags); err != nil {
					return err
				}
			}
			return writePromotion(cmd, e, rep, a, next, f)
		}),
	}
	netnsFlag(cmd, g)
	fl := cmd.Flags()
	fl.DurationVar(&f.quietFor, "quiet-for", promote.DefaultQuietFor, "a user is quiet when nothing new or audited happened for this long")
	fl.BoolVar(&f.asJSON, "json", false, "print the proposal (and what --apply did) as JSON")
	fl.BoolVar(&f.apply, "apply", false, "enforce the ready users: a new generation through apply's path")
	f.add(fl, "with --apply: apply even when the pre-apply check refuses the table (an empty baseline, DNS cut off, a follow mark in use)",
		"with --apply: roll back unless \"egress-enforce confirm\" runs within this long (e.g. 2m)",
		"with --confirm-within: roll back early when drops exceed this rate (e.g. 50/s)",
		"with --apply: why, kept in the history (default: the users promoted)")
	return cmd
}

// check refuses flags that would do nothing: the rollout flags without
// --apply, a denied rate without a confirm window, a bad quiet period.
func (f *promoteFlags) check(cmd *cobra.Command) error {
	if f.quietFor <= 0 {
		return fmt.Errorf("--quiet-for: %s is not a positive duration", f.quietFor)
	}
	if !f.apply {
		for _, name := range []string{"confirm-within", "rollback-if-denied-rate", "reason", "force"} {
			if cmd.Flags().Changed(name) {
				return fmt.Errorf("--%s: only with --apply", name)
			}
		}
	}
	_, err := f.rate()
	return err
}

// evaluatePromotion reads the store and the scheduled jobs and judges
// every user; cur is the current generation's plan.
func evaluatePromotion(cmd *cobra.Command, e *env, quietFor time.Duration) (*promote.Report, *plan.Plan, error) {
	now, err := e.Now()
	if err != nil {
		return nil, nil, err
	}
	st, err := e.ReadStore()
	if err != nil {
		return nil, nil, err
	}
	in, err := promote.Gather(st, e.target, e.Cfg.Table, now.Add(-quietFor), now, e.Cfg.DNSResolverUIDs)
	if err != nil {
		return nil, nil, err
	}
	runs, err := st.Runs()
	if err != nil {
		return nil, nil, err
	}
	in.Jobs, in.JobsErr = scanJobs(cmd, e, now, runs, in)
	rep, err := promote.Evaluate(in, promote.Options{Now: now, QuietFor: quietFor, Target: e.target.Path(), UserName: config.UserNames{}.Name})
	if err != nil {
		return nil, nil, err
	}
	return rep, in.Plan, nil
}

// scanJobs scans the scheduled jobs against the soak; what the scan could
// not read is in its notes, and logged.
func scanJobs(cmd *cobra.Command, e *env, now time.Time, runs []store.Run, in promote.Input) (*coverage.Coverage, error) {
	c, err := cli.ScanCoverage(cmd.Context(), e.Cfg, now, runs, in.Flows)
	if err != nil {
		return nil, err
	}
	for _, n := range c.Notes {
		e.Log.Debug("scheduled jobs: " + n)
	}
	return c, nil
}

// applyPromotion installs the current table with the ready users
// enforced too, through apply's path.
func applyPromotion(e *env, rep *promote.Report, cur *plan.Plan, r rolloutFlags) (*applied, *plan.Plan, error) {
	next, err := promote.Next(rep, cur)
	if err != nil {
		return nil, nil, err
	}
	if err := preApply(e, next, nil, r.force, false); err != nil {
		return nil, nil, err
	}
	if r.reason == "" {
		r.reason = fmt.Sprintf("promote: enforce %s (quiet for %s)", uids(rep.Ready), rep.QuietFor)
	}
	a, err := rollOut(e, next, r, false, nil, nil)
	return a, next, err
}

// writePromotion says what --apply did (text), or prints the proposal
// with it (JSON).
func writePromotion(cmd *cobra.Command, e *env, rep *promote.Report, a *applied, next *plan.Plan, f promoteFlags) error {
	w := cmd.OutOrStdout()
	if f.asJSON {
		out := struct {
			*promote.Report
			Applied *promotionApplied `json:"applied,omitempty"`
		}{Report: rep}
		if a != nil {
			out.Applied = &promotionApplied{Generation: a.gen.N, State: a.gen.State, Mode: a.gen.Mode,
				EnforceUIDs: a.gen.EnforceUIDs, AuditUIDs: a.gen.AuditUIDs, ApplyResult: a.res}
		}
		return printJSON(w, out)
	}
	switch {
	case a != nil:
		return writeApplied(cmd, e, next, a, f.confirmWithin, false)
	case f.apply:
		fmt.Fprintln(w, "nothing applied: no user is ready")
	}
	return nil
}

// promotionApplied is the generation --apply made.
type promotionApplied struct {
	Generation  uint64   `json:"generation"`
	State       string   `json:"state"`
	Mode        string   `json:"mode"`
	EnforceUIDs []uint32 `json:"enforce_uids,omitempty"`
	AuditUIDs   []uint32 `json:"audit_uids,omitempty"`
	*nft.ApplyResult
}
