package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/coverage"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// coverageEvery is how often a learner with --metrics-addr scans the
// scheduled jobs again.
const coverageEvery = 10 * time.Minute

func newCoverage(g *cli.Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "coverage [--db PATH] [--json] [--root DIR]",
		Short: "List the host's scheduled jobs and whether the soak saw them run",
		Long: `coverage says what the soak has not seen yet. Convergence (no new destination
for days) cannot see a job that has not run yet: a weekly or monthly timer,
cron.weekly, a certificate renewal, a backup. coverage lists every scheduled
job of the host:

  systemd timers   the *.timer units of the unit directories (with their
                   drop-ins); enabled ones count. OnCalendar= elapses are
                   computed as systemd does; OnBootSec= and the other
                   monotonic settings from the boot time, approximately.
                   Last triggers: from systemd over D-Bus when it runs, else
                   the stamp files of persistent timers.
  cron             /etc/crontab, /etc/cron.d, the scripts of the run-parts
                   directories they run (cron.daily, cron.weekly...) directly
                   or through anacron (last runs from anacron's time stamps),
                   and users' crontabs.

For each: name, kind, schedule, unit or command, last and next run, and
whether it was seen during the soak: one of its runs fell inside a learning
run (a trigger recorded by systemd or anacron, or an elapse of its schedule
while its scheduler runs), or the learner saw its service's cgroup
(system.slice/NAME.service) connect. It also says whether the learner saw
the job connect, and where to. A job that runs while the learner records is
covered even if it reaches nothing.

The verdict: the soak covers every job, or it should last until the latest
time one of the jobs not seen yet is due (after its randomized delay), or
some jobs run only at boot and need a reboot (or a run by hand) while
learning.

The files are read under coverage_root (--root; default /) at the
coverage_* paths of the configuration. --json prints the whole scan.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.Load(cmd)
			if err != nil {
				return err
			}
			now, err := g.Now()
			if err != nil {
				return err
			}
			runs, flows, note, err := soakRecords(cfg)
			if err != nil {
				return err
			}
			c, err := scanCoverage(cmd.Context(), cfg, now, runs, flows)
			if err != nil {
				return err
			}
			if note != "" {
				c.Notes = append(c.Notes, note)
			}
			if asJSON {
				return coverage.WriteJSON(cmd.OutOrStdout(), c)
			}
			return coverage.WriteText(cmd.OutOrStdout(), c)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the scan as JSON (jobs, notes, verdict)")
	cmd.Flags().String("root", "/", "read the scheduled jobs of the host whose files are under this directory")
	g.Loader.Bind("coverage_root", "root")
	return cmd
}

// soakRecords reads the learning runs and flows; a store not created yet
// is no error (the soak has not started), only a note.
func soakRecords(cfg *config.Config) ([]store.Run, []store.Flow, string, error) {
	st, err := cli.ReadStore(cfg)
	if errors.Is(err, store.ErrNotExist) {
		return nil, nil, "no store at " + cfg.DB + ": no learning run yet", nil
	}
	if err != nil {
		return nil, nil, "", err
	}
	runs, err := st.Runs()
	if err != nil {
		return nil, nil, "", err
	}
	flows, err := st.Flows()
	if err != nil {
		return nil, nil, "", err
	}
	return runs, flows, "", nil
}

// scanCoverage scans the configured places against a soak.
var scanCoverage = cli.ScanCoverage

// writeReportCoverage ends a report with the coverage: the verdict and
// the jobs not seen yet. A scan that fails is a line, not a failed report.
func writeReportCoverage(ctx context.Context, w io.Writer, cfg *config.Config, now time.Time, runs []store.Run, flows []store.Flow) {
	c, err := scanCoverage(ctx, cfg, now, runs, flows)
	if err != nil {
		_, _ = io.WriteString(w, "\nscheduled jobs: "+textsafe.String(err.Error())+"\n")
		return
	}
	_ = coverage.WriteSummary(w, c)
}

// startCoverageMetrics registers the coverage metrics on reg and scans
// every coverageEvery until the returned stop.
func startCoverageMetrics(ctx context.Context, reg *prometheus.Registry, cfg *config.Config) (stop func()) {
	ctx, stop = context.WithCancel(ctx)
	c := &coverage.Collector{}
	reg.MustRegister(c)
	c.Start(ctx, coverageEvery, func(ctx context.Context) (*coverage.Coverage, error) {
		runs, flows, _, err := soakRecords(cfg)
		if err != nil {
			return nil, err
		}
		return scanCoverage(ctx, cfg, time.Now(), runs, flows)
	})
	return stop
}
