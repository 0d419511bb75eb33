package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
)

// watchHelp is watch's --help.
var watchHelp = `watch subscribes to the NFLOG group of our table's default rules and decodes
every packet they log: drop or audit, user, protocol, destination and port.
It prints each one (--json: one JSON object a line; --quiet: none), counts
them by user and destination, and records them in the store every
flush_interval, for "egress-enforce denied" and reconciliation.

On SIGINT or SIGTERM it writes what it holds to the store and logs a summary
(msg="watching stopped"): the packets logged by action, those its bounds left
out, the log messages lost, and anything the last write could not store.

--metrics-addr serves Prometheus metrics: denied and audited packets by user
and destination (the top --top-k, the rest as "other"), set sizes and rule
counters read from the kernel, drops that went unlogged (over drop_log_rate),
the current generation, mode and the time of the last apply. Scrapes serve
what was gathered last (every --metrics-refresh): a scrape never waits on
the kernel, the store or the monitor.

Its memory is bounded whatever the number of distinct destinations denied:
the top destinations come from a bounded summary, and at most ` + strconv.Itoa(monitor.DefaultPendingCapacity) + `
destinations are kept between two flushes (the packets of others are
counted as unrecorded). Every hour it prunes the store: observations,
per-minute denials and learning runs older than retention (default 90d),
and the plans of generations older than the newest keep_generations (50),
which keep a summary; the current generation's plan and rollback targets
stay.`

func newWatch(g *cli.Globals) *cobra.Command {
	var metricsAddr string
	var asJSON, quiet bool
	var topK int
	var refresh time.Duration
	cmd := &cobra.Command{
		Use:   "watch [--netns NAME|PATH] [--metrics-addr ADDR] [--metrics-refresh D] [--top-k N] [--flush-interval D] [--json|--quiet]",
		Short: "Monitor denied (and audited) packets: print them, record them, export metrics",
		Long:  watchHelp,
		Args:  cobra.NoArgs,
		RunE: withStore(g, true, func(cmd *cobra.Command, e *env, st *store.Store) error {
			cli.SoftMemoryLimit(watchMemoryLimit)
			names := config.UserNames{}
			mon := monitor.NewMonitor()
			out := make(chan monitor.LogEntry, 1024)
			go printEntries(cmd.OutOrStdout(), out, asJSON, names.Name)
			defer close(out)
			ctx, cfg := cmd.Context(), e.Cfg
			if metricsAddr != "" {
				coll := &monitor.Collector{Monitor: mon, Target: e.target, Table: cfg.Table, Store: st, Resolvers: cfg.DNSResolverUIDs, UserName: names.Name, TopK: topK}
				stop, err := serveCollector(ctx, e.Log, metricsAddr, coll, refresh)
				if err != nil {
					return err
				}
				defer stop()
			}
			// "watching" is the ready line: logged once the NFLOG
			// subscription is in place, so nothing logged after it is missed.
			ready := make(chan struct{})
			go func() {
				select {
				case <-ready:
					e.Log.Info("watching", "netns", cfg.Netns, "nflog_group", cfg.NFLOGGroup, "db", cfg.DB)
				case <-ctx.Done():
				}
			}()
			began := time.Now()
			defer func() { logWatchSummary(e.Log, mon, time.Since(began), cfg) }()
			// Which service sent each logged packet (per-service rules).
			services, err := monitor.NewServiceNamer(e.target, cfg.ServiceDepth)
			if err != nil {
				e.Log.Warn("denied packets are attributed to users only", "err", err)
			}
			defer services.Close()
			staged := &stagedWarner{log: e.Log}
			staged.load(st, e.target, cfg.Table)
			go staged.run(ctx, st, e.target, cfg.Table)
			return monitor.Watch(ctx, e.target, mon, monitor.WatchOptions{
				Ready: ready, Services: services,
				Group: uint16(cfg.NFLOGGroup), Store: st, Flush: cfg.FlushInterval,
				OnEntry: func(le monitor.LogEntry) {
					staged.see(le)
					if quiet {
						return
					}
					select {
					case out <- le:
					default: // a slow terminal must not stall the monitor
					}
				},
				OnFlushError: func(err error) { e.Log.Warn("keeping observations for the next flush", "err", err) },
				Status:       monitor.StatusOf(e.kernel, cfg.Table),
				OnStatusError: func(err error) {
					e.Log.Warn("read the table's counters: packets over the log's rate limit are not known for this run", "err", err)
				},
				Prune:   &store.PruneOptions{Retention: cfg.Retention, KeepGenerations: cfg.KeepGenerations},
				OnPrune: pruneLogger(e.Log, cfg),
			})
		}),
	}
	netnsFlag(cmd, g)
	f := cmd.Flags()
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9310)")
	f.BoolVar(&asJSON, "json", false, "print each logged packet as a JSON object")
	f.BoolVar(&quiet, "quiet", false, "print nothing per packet")
	f.IntVar(&topK, "top-k", 20, "destinations, users and services with their own metric series; the rest is \"other\"")
	f.DurationVar(&refresh, "metrics-refresh", 2*time.Second, "how often the kernel's counters and the store are read for the metrics")
	f.String("flush-interval", "5s", "how often observations are written to the store")
	g.Loader.Bind("flush_interval", "flush-interval")
	return cmd
}

// logWatchSummary logs what a watch saw, when it stops: the logged
// packets by action, what its bounds left out, what the NFLOG socket
// lost, and what the last flush could not write.
func logWatchSummary(log *slog.Logger, mon *monitor.Monitor, elapsed time.Duration, cfg *config.Config) {
	st, totals := mon.Stats(), mon.Totals()
	var unwritten uint64
	for _, o := range mon.Take().Observations {
		unwritten += o.Hits
	}
	log.Info("watching stopped", "elapsed", elapsed.Round(time.Second), "logged_packets", st.Entries,
		"logged_dropped", totals[monitor.ObsActionDrop], "logged_audited", totals[monitor.ObsActionAudit],
		"unrecorded_dropped", st.UnrecordedDrop, "unrecorded_audited", st.UnrecordedAudit,
		"lost_log_entries", st.LostLogs, "receive_errors", st.ReceiveErrors, "not_written_to_store", unwritten, "db", cfg.DB)
}

// printEntries prints the logged packets it receives, until out closes.
func printEntries(w io.Writer, out <-chan monitor.LogEntry, asJSON bool, userName func(uint32) string) {
	enc := json.NewEncoder(w)
	for e := range out {
		if asJSON {
			_ = enc.Encode(e)
			continue
		}
		user := "none"
		if e.UID != nil {
			user = fmt.Sprintf("%d (%s)", *e.UID, userName(*e.UID))
		}
		fmt.Fprintf(w, "%s %-5s uid %s %s %s\n", e.Time.Local().Format(time.TimeOnly), e.Action, user,
			plan.ProtoName(e.Proto), netip.AddrPortFrom(e.Dst, e.Port))
	}
}

// serveCollector gathers the collector's metrics (with the Go runtime's
// and the process's) now and every interval in the background, and serves
// the last gathering on addr.
func serveCollector(ctx context.Context, log *slog.Logger, addr string, coll *monitor.Collector, every time.Duration) (stop func(), err error) {
	if every <= 0 {
		return nil, fmt.Errorf("--metrics-refresh: %s is not a positive duration", every)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(coll, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	snap := &cli.MetricsSnapshot{}
	snap.Start(ctx, reg, every)
	stop, bound, err := cli.ServeMetrics(addr, snap)
	if err != nil {
		return nil, err
	}
	log.Info("serving metrics", "addr", "http://"+bound+"/metrics")
	return stop, nil
}

// pruneLogger logs what a prune of the watch deleted.
func pruneLogger(log *slog.Logger, cfg *config.Config) func(store.PruneResult, error) {
	return func(res store.PruneResult, err error) {
		if err != nil {
			log.Warn("prune the store", "err", err)
		} else if res != (store.PruneResult{}) {
			log.Info("pruned the store", "observations", res.Observations, "denial_minutes", res.Denials,
				"runs", res.Runs, "watch_runs", res.Watches, "dns_denials", res.DNSDenials, "plans", res.Plans, "retention", cfg.Retention, "keep_generations", cfg.KeepGenerations)
		}
	}
}

// retentionText says what retention prunes: "older than 90 days".
func retentionText(d time.Duration) string {
	switch {
	case d <= 0:
		return "retention 0: none is pruned"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("older than %d days", d/(24*time.Hour))
	}
	return "older than " + d.String()
}

// keepText says which plans keep_generations prunes.
func keepText(n int) string {
	if n <= 0 {
		return "keep_generations 0: every plan is kept"
	}
	return fmt.Sprintf("older than the newest %d generations, but for the current one and rollback targets", n)
}

// watchMemoryLimit is the monitor's soft heap limit unless GOMEMLIMIT says
// otherwise (its unit allows 256 MiB; its structures are bounded well
// below this).
const watchMemoryLimit = 48 << 20

func newPrune(g *cli.Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "prune [--json]",
		Short: "Delete records older than retention and plans past keep_generations",
		Long: `prune deletes from the store the monitor's observations not seen within
retention (default 90d), per-minute denials older than that, and learning
runs that ended before it; and replaces the plans of generations older than
the newest keep_generations (default 50) by a summary (size and SHA-256).
The plans the current generation and a rollback need are kept whatever
their age. "egress-enforce watch" does this every hour. Learned flows, DNS
names and the generations' records are never pruned.`,
		Args: cobra.NoArgs,
		RunE: withExistingStore(g, func(cmd *cobra.Command, e *env, st *store.Store) error {
			now, err := e.Now()
			if err != nil {
				return err
			}
			cfg := e.Cfg
			res, err := st.Prune(store.PruneOptions{Now: now, Retention: cfg.Retention, KeepGenerations: cfg.KeepGenerations,
				KeepPlans: rollout.PlansToKeep})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "pruned %d observations, %d minutes of denials, %d denied DNS names and %d learning runs (%s), and the plans of %d generations (%s; they keep a summary)\n",
				res.Observations, res.Denials, res.DNSDenials, res.Runs, retentionText(cfg.Retention), res.Plans, keepText(cfg.KeepGenerations))
			return err
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was pruned as JSON")
	return cmd
}

func newDenied(g *cli.Globals) *cobra.Command {
	var asJSON bool
	var since time.Duration
	var top int
	cmd := &cobra.Command{
		Use:   "denied [--netns NAME|PATH] [--since D] [--top N] [--json]",
		Short: "Summarize what the monitor recorded: most denied destinations, by user, rate around the last apply",
		Long: `denied reads what "egress-enforce watch" recorded: the destinations the
allow-list did not cover, most denied first, with the names their user
resolved for them (or, when that user resolved none, those of the resolvers of
dns_resolver_users; never another user's) and the processes the learner saw
for them; the same by user; and the logged packets per minute before and
after the last apply of the target's current generation (--netns: the error
rate after a policy change). --since keeps destinations seen within that long
and sets the window before the apply (default: everything, and an hour).

Its figures are the packets the default rules logged and watch received;
status counts every packet, also those over the log's rate limit.

Then the DNS queries dns_policy did not allow (recorded by "egress-enforce
dns-policy watch"), by user, with the most frequent parent domains; a parent
with 50 or more distinct denied names is called out as a tunnelling
signature.`,
		Args: cobra.NoArgs,
		RunE: withStore(g, false, func(cmd *cobra.Command, e *env, st *store.Store) error {
			sum, err := monitor.Denied(st, e.target, e.Cfg.Table, since, time.Now(), e.Cfg.DNSResolverUIDs, config.UserNames{}.Name)
			if err != nil {
				return err
			}
			dns, err := readDNSDenied(st, since, time.Now())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					*monitor.DeniedSummary
					DNS *dnsDenied `json:"dns"`
				}{sum, dns})
			}
			if err := sum.Write(cmd.OutOrStdout(), top); err != nil {
				return err
			}
			dns.writeSummary(cmd.OutOrStdout(), e.Cfg.DNSPolicy)
			return nil
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().DurationVar(&since, "since", 0, "only destinations seen within this long (e.g. 24h)")
	cmd.Flags().IntVar(&top, "top", 20, "destinations to list")
	return cmd
}
