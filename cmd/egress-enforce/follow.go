package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/options"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/textsafe"
)

func newFollow(g *cli.Globals) *cobra.Command {
	var fl daemonFlags
	cmd := &cobra.Command{
		Use:   "follow [--cgroup PATH] [--netns NAME|PATH] [--pin-dir DIR] [--metrics-addr ADDR] [--json]",
		Short: "Keep name rules true to DNS: add the addresses answers give to the follow sets",
		Long: `follow loads eBPF programs on a cgroup v2 directory (default: the root of the
cgroup2 mount) that watch the DNS queries and answers of its sockets in the
enforced network namespace (--netns). An answer is used only in that
namespace, if it comes from a configured resolver (resolv_conf, dns_servers;
with --netns NAME, /etc/netns/NAME/resolv.conf when it exists),
from port 53, to a socket that sent a query with that id and question. When a
name rule of the current generation allows the receiving user that name
(directly or through a wildcard), the addresses of the records whose owner is
the question or a name of its CNAME chain are authorized for that user in the
kernel before the application can read the answer, and a socket connecting to
one gets the follow bit in its mark, which the table accepts while follow runs:
the first connection after a resolution is not dropped. A packet with the bit
whose socket was not marked for that very destination is dropped in the
kernel, so a mark set by a process itself opens nothing. Then follow adds the
addresses to the sets follow4/follow6 for their TTL, at least follow_ttl_floor
and at most follow_ttl_max, at most follow_max_per_name per name; later
answers refresh them, and established connections outlive them.

With match service or user,service, follow also keeps the service sets true
to the services' cgroups, as "egress-enforce services" does.

The mark check and the sockets' authorizations are pinned under --pin-dir (a
bpf file system): if follow dies, the check stays attached and the table stops
accepting the mark within 5 seconds; a new follow takes over both. A clean
stop (SIGINT, SIGTERM) closes the table's gate first, then detaches.

A DNS policy (dns-policy apply) of the same cgroup, namespace and table runs
inside follow's egress program (one program on the hook, not two): follow
takes it into its slot before attaching, and gives it its own program back
before detaching at a clean stop; if follow dies, the policy keeps running in
its pinned program. "dns-policy status" says which.

Ignored answers are counted by reason (status, --metrics-addr). The counters
are saved in the store (--db) within a second of a change, and before an
added address is printed; status shows them. --json prints each added address
as a JSON object. On SIGINT or SIGTERM it logs a summary (msg="following
stopped"): answers used and ignored, addresses added, connects marked, and
the packets the table's mark rules accepted (their kernel counters: a set
that already holds a marked connect's destination accepts it first).`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			opts, err := options.FromConfig(e.Cfg)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			if len(opts.DNSServers) == 0 {
				return fmt.Errorf("no resolver to trust: %s lists none and dns_servers is empty", opts.ResolvConf)
			}
			st, err := e.WriteStore()
			if err != nil {
				return err
			}
			f, err := follow.Start(follow.Config{
				Cgroup: fl.cgroup, Target: e.target, Table: e.Cfg.Table, Store: st, Resolvers: opts.DNSServers,
				Window: e.Cfg.FollowWindow, Log: e.Log, PinRoot: fl.pinDir, OnElement: cli.Printer(cmd.OutOrStdout(), fl.asJSON, addressLine),
			})
			if err != nil {
				return err
			}
			defer f.Close()
			_, stop, err := cli.MetricsOn(e.Log, fl.metricsAddr, follow.Collector{F: f})
			if err != nil {
				return err
			}
			defer stop()
			// Per-service sets: their cgroup ids kept current (see services).
			if cg, err := nft.HostCgroups(); err == nil {
				go keepServices(cmd.Context(), st, e.kernel, cg, e.Cfg.Table, e.Log, func(c nft.ServiceChange) {
					e.Log.Info("service elements", "service", c.Service, "from_id", c.From, "to_id", c.To, "elements", c.Elements, "took", c.Took)
				})
			}
			s := f.Stats()
			e.Log.Info("following", "cgroup", cgroupOrRoot(fl.cgroup), "netns", e.Cfg.Netns, "generation", s.Generation, "rules", s.Rules,
				"resolvers", fmt.Sprint(opts.DNSServers), "resolv_conf", opts.ResolvConf)
			began := time.Now()
			err = f.Run(cmd.Context())
			logFollowSummary(e.Log, f.Stats(), time.Since(began), e.Cfg.DB)
			return err
		}),
	}
	fl.add(cmd, g, "followed", "the mark check and the sockets' authorizations are pinned", "each added address")
	return cmd
}

// daemonFlags are the flags of the commands that keep eBPF programs
// attached while they run (follow, namecheck).
type daemonFlags struct {
	cgroup, metricsAddr, pinDir string
	asJSON                      bool
}

// add adds the flags; the help says whose sockets are verb, what is
// pinned, and what --json prints.
func (f *daemonFlags) add(cmd *cobra.Command, g *cli.Globals, verb, pinned, printed string) {
	netnsFlag(cmd, g)
	fs := cmd.Flags()
	fs.StringVar(&f.cgroup, "cgroup", "", "cgroup v2 directory whose sockets are "+verb+" (default: the root of the cgroup2 mount)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address")
	fs.StringVar(&f.pinDir, "pin-dir", follow.DefaultPinRoot, "directory on a bpf file system where "+pinned)
	fs.BoolVar(&f.asJSON, "json", false, "print "+printed+" as JSON")
}

// addressLine is the line for an address the follower adds or refreshes.
func addressLine(e follow.Address) string {
	verb := "refreshed"
	if e.New {
		verb = "added"
	}
	return fmt.Sprintf("%s %s uid %d %s %s %s for %s (%s after the answer)", time.Now().Format(time.TimeOnly), verb,
		e.UID, textsafe.String(e.Name), plan.ProtoName(e.Proto), netip.AddrPortFrom(e.IP, e.Port), e.Timeout, e.Latency.Round(time.Microsecond))
}

// logFollowSummary logs what a follower did, when it stops.
func logFollowSummary(log *slog.Logger, s follow.Stats, elapsed time.Duration, db string) {
	markRules := "unknown (no table)"
	if s.MarkRules != nil {
		markRules = strconv.FormatUint(s.MarkRules.Packets, 10)
	}
	log.Info("following stopped", "elapsed", elapsed.Round(time.Second), "generation", s.Generation, "rules", s.Rules,
		"answers_used", s.Accepted, "answers_ignored", s.Ignored(), "answers_not_followed", s.NoRule,
		"addresses_added", s.Added, "addresses_refreshed", s.Refreshed, "left_out_by_bound", s.BoundDropped, "nft_errors", s.NftErrors,
		"connects_marked", s.Marked, "mark_rules_accepted_packets", markRules, "mark_check_dropped", s.MarkDropped,
		"not_authorized_name_check_full", s.FollowedFull, "lost_records", s.Lost, "db", db)
}

func cgroupOrRoot(c string) string {
	if c == "" {
		return "the cgroup2 root"
	}
	return c
}
