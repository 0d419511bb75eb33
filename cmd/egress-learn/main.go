// Command egress-learn records which users reach which destinations: eBPF
// programs on a cgroup v2 directory count every outbound connection attempt
// and read DNS answers, into a bbolt baseline that egress-enforce turns into
// an allow-list.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/buildinfo"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/store"
)

// memoryLimit is the learner's (run's) soft heap limit unless GOMEMLIMIT
// says otherwise: a flush of many new flows makes garbage quickly, and the
// collector should run before the heap doubles. Not for the other
// commands: a report of 1,000,000 flows holds far more, and under the
// limit spent two thirds of its time collecting (15 s of CPU, 5 without).
const memoryLimit = 64 << 20

func main() {
	cli.Main(newRoot())
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "egress-learn",
		Short: "Learn which destinations each user of this host reaches",
		Long: `egress-learn attaches eBPF programs to a cgroup v2 directory (by default the
root of the cgroup2 mount, so the whole host) and records every outbound
connection attempt: user, process, protocol, address, port, and the DNS names
the address was resolved from. Nothing is blocked while learning.

The baseline is a bbolt file (default ` + store.DefaultPath + `) that
egress-enforce turns into an nftables allow-list.

` + cli.ConfigHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := cli.NewGlobals(root)
	root.AddCommand(newRun(g), newReport(g), newExport(g), newCoverage(g))
	buildinfo.Attach(root)
	return root
}

func newRun(g *cli.Globals) *cobra.Command {
	var duration time.Duration
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "run [--cgroup PATH] [--duration D] [--flush-interval D] [--metrics-addr ADDR] [--ignore-loopback=true|false] [--udp-unconnected sendmsg|egress] [--ignore-users U,..] [--ignore-cidrs CIDR,..] [--ignore-ports P,..] [--dns-resolver-users U,..]",
		Short: "Attach to a cgroup and record outbound connections until stopped",
		Long: `run attaches the eBPF programs to a cgroup v2 directory and records until
--duration elapses or it receives SIGINT or SIGTERM; then it writes what is
left and exits 0. Runs add up in the same store. Writes are batched and
committed every --flush-interval; other processes (a report, egress-enforce)
can read the store meanwhile.

Once the eBPF programs are attached it logs its ready line (msg=learning):
every connection from then on is recorded. On a terminal it shows a live
status line; otherwise it logs a summary line every summary_interval.
Loopback destinations are ignored unless --ignore-loopback=false.

Unconnected UDP (udp_unconnected, --udp-unconnected): "sendmsg" (default)
counts every sendto() in the cgroup sendmsg4/sendmsg6 programs, with the
address the process gave, even when the datagram is dropped later (a
firewall, no route). "egress" counts every datagram that leaves, in the
egress program, with its destination after any DNAT in the output path,
and does not attach the sendmsg programs: the kernel locks the socket and
builds their context for every unconnected datagram, whatever they do, so
UDP-heavy hosts pay less. In "egress" a datagram dropped before the egress
hook (by an nftables output or postrouting rule, a failed route) is not
counted, the UID is the socket's owner (the one nftables' meta skuid
matches), and a sendto() to another address from a connected socket is
not counted.

DNS answers name the addresses they give only when they reach a socket that
sent a query with the same id and question to the server they come from,
once; the others (unsolicited, forged, replayed) are counted as ignored, by
reason, in the status line, the run record and the metrics. A flow carries
the names its own user resolved for its address or, when that user resolved
none, those from the answers of the local resolvers of dns_resolver_users
(--dns-resolver-users; default: root and the usual resolver daemons' users
this host has), never another user's.`,
		Args: cobra.NoArgs,
		RunE: g.RunE(func(cmd *cobra.Command, e *cli.Env) error {
			cli.SoftMemoryLimit(memoryLimit)
			lc, err := learnConfig(e.Cfg, e.Log, duration)
			if err != nil {
				return err
			}
			if duration < 0 {
				return fmt.Errorf("--duration: %s is negative", duration)
			}
			reg, stop, err := cli.MetricsOn(e.Log, metricsAddr, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			if err != nil {
				return err
			}
			defer stop()
			if reg != nil {
				lc.Metrics = reg
				defer startCoverageMetrics(cmd.Context(), reg, e.Cfg)()
			}
			sum, err := learn.Run(cmd.Context(), lc)
			if sum != nil {
				s := sum.Status
				e.Log.Info("learning stopped", "run", sum.Run.ID, "elapsed", s.Elapsed.Round(time.Second),
					"events", s.Events, "flows", s.Flows, "lost_events", sum.Probe.Lost(), "dns_answers", s.DNSAnswers,
					"dns_lost", sum.Run.DNSLost, "dns_ignored", sum.Probe.DNS.Ignored(), "db", e.Cfg.DB)
			}
			return err
		}),
	}
	runFlags(cmd, g, &duration, &metricsAddr)
	return cmd
}

// learnConfig is the learner's configuration from the settings.
func learnConfig(cfg *config.Config, log *slog.Logger, duration time.Duration) (learn.Config, error) {
	cgroup := cfg.Cgroup
	if cgroup == "" {
		var err error
		if cgroup, err = cgroupbpf.Mount(); err != nil {
			return learn.Config{}, err
		}
	}
	lc := learn.Config{
		DB:       cfg.DB,
		Cgroup:   cgroup,
		Duration: duration,
		Flush:    cfg.FlushInterval,
		Filter: learn.Filter{
			Users:    cfg.IgnoreUIDs,
			Prefixes: cfg.IgnorePrefixes,
			Ports:    cfg.IgnorePortList,
			Loopback: cfg.IgnoreLoopback,
		},
		Resolvers:        cfg.DNSResolverUIDs,
		NoPresentedNames: !cfg.PresentedNames,
		Probe:            learn.DefaultProbeOptions(),
		SummaryEvery:     cfg.SummaryInterval,
		Log:              log,
	}
	lc.Probe.UDPAtEgress = cfg.UDPUnconnected == config.UDPUnconnectedEgress
	if isTerminal(os.Stderr) {
		lc.Status = os.Stderr
	}
	return lc, nil
}

// runFlags are run's flags.
func runFlags(cmd *cobra.Command, g *cli.Globals, duration *time.Duration, metricsAddr *string) {
	f := cmd.Flags()
	f.String("cgroup", "", "cgroup v2 directory to learn from (default: the root of the cgroup2 mount)")
	f.DurationVar(duration, "duration", 0, "stop after this long (default: until SIGINT/SIGTERM)")
	f.StringVar(metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9311): events, lost events, distinct flows, seconds since the last new flow, DNS answers used and ignored, and the coverage of the scheduled jobs (scanned every 10 minutes)")
	f.String("flush-interval", "5s", "how often batched observations are committed to the store")
	f.Bool("ignore-loopback", true, "do not record connections to 127.0.0.0/8 and ::1")
	f.String("udp-unconnected", config.UDPUnconnectedSendmsg, `where unconnected UDP datagrams (sendto() without connect()) are counted: "sendmsg" (the cgroup sendmsg4/sendmsg6 programs: every call, with the address the process gave) or "egress" (the egress program: every datagram that leaves, with its destination after any DNAT; the sendmsg programs are not attached, which makes each datagram cheaper: see README, Learning unconnected UDP)`)
	f.StringSlice("ignore-users", nil, "users (names or UIDs) whose connections are not recorded")
	f.StringSlice("ignore-cidrs", nil, "destinations (CIDRs or addresses) not recorded")
	f.IntSlice("ignore-ports", nil, "destination ports not recorded")
	f.StringSlice("dns-resolver-users", nil, `users (names or UIDs) of the local DNS resolvers whose answers name the flows of users that resolved nothing themselves; "default": root and the usual resolver users this host has`)
	g.Loader.Bind("cgroup", "cgroup")
	g.Loader.Bind("flush_interval", "flush-interval")
	g.Loader.Bind("ignore_loopback", "ignore-loopback")
	g.Loader.Bind("udp_unconnected", "udp-unconnected")
	g.Loader.Bind("ignore_users", "ignore-users")
	g.Loader.Bind("ignore_cidrs", "ignore-cidrs")
	g.Loader.Bind("ignore_ports", "ignore-ports")
	g.Loader.Bind("dns_resolver_users", "dns-resolver-users")
}

func newReport(g *cli.Globals) *cobra.Command {
	var asJSON bool
	var userArg string
	var staleAfter, stableAfter time.Duration
	cmd := &cobra.Command{
		Use:   "report [--json] [--user NAME|UID] [--stale-after D] [--stable-after D]",
		Short: "Show the recorded flows, grouped by user",
		Long: `report prints the baseline: per user, each destination with the names it was
resolved from, protocol and port, hits, first and last seen, processes, and
services (the cgroup paths cut at the unit, as match service does: the first
*.service or *.scope component, or service_depth).
It can run while a learner writes to the same store. It ends with the soak's
coverage of the host's scheduled jobs (see egress-learn coverage): how many
have not run while learning, and until when to keep learning.

--json prints an array of flow objects (uid, user, proto, ip, port, hostnames,
hits, first_seen, last_seen, processes, cgroups, services) for scripts.`,
		Args: cobra.NoArgs,
		RunE: g.RunE(func(cmd *cobra.Command, e *cli.Env) error {
			now, err := e.Now()
			if err != nil {
				return err
			}
			depth := e.Cfg.ServiceDepth
			opts := learn.ReportOptions{Now: now, StaleAfter: staleAfter, UserName: config.UserNames{}.Name,
				Service: func(c string) string { return plan.ServiceOf(c, depth) }}
			if userArg != "" {
				uid, err := config.LookupUID(userArg)
				if err != nil {
					return fmt.Errorf("--user: %w", err)
				}
				opts.UID = &uid
			}
			st, err := e.ReadStore()
			if err != nil {
				return err
			}
			snap, err := st.Snapshot()
			if err != nil {
				return err
			}
			if asJSON {
				return learn.WriteReportFlowsJSON(cmd.OutOrStdout(), snap.Flows, opts)
			}
			if err := learn.WriteReport(cmd.OutOrStdout(), snap.Flows, opts, snap.Runs, convergence(snap.Flows, opts, stableAfter), now); err != nil {
				return err
			}
			writeReportCoverage(cmd.Context(), cmd.OutOrStdout(), e.Cfg, now, snap.Runs, snap.Flows)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of flows")
	cmd.Flags().StringVar(&userArg, "user", "", "only this user's flows (name or UID)")
	cmd.Flags().DurationVar(&staleAfter, "stale-after", 30*24*time.Hour, "approved flows not seen for this long are shown as stale")
	cmd.Flags().DurationVar(&stableAfter, "stable-after", 72*time.Hour, "a user has converged when no new destination appeared for this long")
	return cmd
}

// convergence is each reported user's convergence: when its last new
// destination appeared, and how many appeared each day of the last week.
func convergence(all []store.Flow, o learn.ReportOptions, stableAfter time.Duration) []store.Convergence {
	conv := store.ConvergeFunc(all, func(f *store.Flow) bool {
		return (o.UID == nil || f.UID == *o.UID) && f.State(o.Now, 0) != store.StateRetired
	}, o.Now, 7, stableAfter)
	for i := range conv {
		conv[i].User = o.UserName(conv[i].UID)
	}
	return conv
}

func newExport(g *cli.Globals) *cobra.Command {
	var out, host string
	cmd := &cobra.Command{
		Use:   "export [-o FILE] [--host NAME] [--json]",
		Short: "Write this host's baseline as JSON, for a fleet baseline",
		Long: `export writes this host's baseline (every flow with its hits, seen interval,
names, processes and approval, and the names of its users) as one JSON
document. "egress-enforce generate --from a.json --from b.json" merges the
exports of several hosts into one role baseline, keeping which hosts saw
each flow, so a fleet shares one reviewed nft file.`,
		Args: cobra.NoArgs,
		RunE: g.RunE(func(cmd *cobra.Command, e *cli.Env) error {
			now, err := e.Now()
			if err != nil {
				return err
			}
			st, err := e.ReadStore()
			if err != nil {
				return err
			}
			flows, err := st.Flows()
			if err != nil {
				return err
			}
			if host == "" {
				if host, err = os.Hostname(); err != nil {
					return fmt.Errorf("read host name: %w", err)
				}
			}
			names := config.UserNames{}
			// In key order, as every list of flows: a fleet apply of one
			// export then takes its flows as they are.
			slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
			x := store.Export{Format: store.ExportFormat, Host: host, Exported: now.UTC(), Users: map[uint32]string{}, Flows: flows}
			if x.Flows == nil {
				x.Flows = []store.Flow{}
			}
			for _, f := range flows {
				x.Users[f.UID] = names.Name(f.UID)
			}
			w, err := cli.Output(cmd, out, 0o600)
			if err != nil {
				return err
			}
			defer w.Close()
			return cli.PrintJSON(w, x)
		}),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of standard output")
	cmd.Flags().StringVar(&host, "host", "", "the host name to record (default: this host's)")
	cmd.Flags().Bool("json", true, "JSON output (the only format)")
	return cmd
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
