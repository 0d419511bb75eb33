package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/dnspolicy"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

// dnsFlags are the flags every dns-policy command takes.
type dnsFlags struct {
	cgroup, pinDir string
	asJSON         bool
}

func (f *dnsFlags) add(cmd *cobra.Command, g *cli.Globals) {
	netnsFlag(cmd, g)
	cmd.Flags().StringVar(&f.cgroup, "cgroup", "", "cgroup v2 directory whose sockets' queries are checked (default: the root of the cgroup2 mount)")
	cmd.Flags().StringVar(&f.pinDir, "pin-dir", dnspolicy.DefaultPinRoot, "directory on a bpf file system where the policy is pinned")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
}

func (f *dnsFlags) config(e *env, mode dnspolicy.Mode) dnspolicy.Config {
	return dnspolicy.Config{Cgroup: f.cgroup, Target: e.target, Table: e.Cfg.Table, PinRoot: f.pinDir, Mode: mode,
		MaxEntries: e.Cfg.DNSMaxNames, Log: e.Log}
}

func newDNSPolicy(g *cli.Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dns-policy",
		Short: "Check in the kernel which names each user may ask a resolver for (dns_policy)",
		Long: `dns-policy keeps DNS from being an open door. A program attached to a cgroup v2
directory (cgroup_skb/egress, pinned: it stays when the command ends) reads
the question of every DNS query the cgroup's sockets send in the enforced
namespace (UDP to port 53, and TCP to port 53 when each segment holds whole
queries) and lets it pass only if the sending user may ask for that name:
a name the user asked while learning (any answer, NXDOMAIN included), a
follow_names entry for the user, or a dns_allow entry for the user or for
everyone. Other queries are counted and reported with uid and name; in
enforce they are dropped (the client sees EPERM at once), in audit they pass.
A query that cannot be parsed (several questions, a compression pointer in
the question, a query split over TCP segments...) counts as not allowed.

  apply    load the allow-list and attach (dns_policy off removes it)
  status   what is attached, its counters, and whether it matches dns_policy
  watch    record the reports in the store (for denied and reconcile), log them
  remove   detach`,
	}
	cmd.AddCommand(newDNSApply(g), newDNSStatus(g), newDNSWatch(g), newDNSRemove(g))
	return cmd
}

func newDNSApply(g *cli.Globals) *cobra.Command {
	var f dnsFlags
	var force bool
	cmd := &cobra.Command{
		Use:   "apply [--dns-policy off|audit|enforce] [--cgroup PATH] [--netns NAME|PATH] [--force]",
		Short: "Load the allow-list (learned questions, follow_names, dns_allow) and attach it",
		Args:  cobra.NoArgs,
		RunE: withStore(g, false, func(cmd *cobra.Command, e *env, st *store.Store) error {
			mode, err := dnspolicy.ParseMode(e.Cfg.DNSPolicy)
			if err != nil {
				return err
			}
			cfg := f.config(e, mode)
			if mode == dnspolicy.Off {
				if err := dnspolicy.Remove(cfg); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "dns_policy is off: no DNS policy attached")
				return nil
			}
			entries, counts, err := dnsEntries(e.Cfg, st)
			if err != nil {
				return err
			}
			if counts["learned"] == 0 && mode == dnspolicy.Enforce && !force {
				return errors.New("refusing to enforce a DNS policy without a learned question: the store holds none (run egress-learn first, or --force)")
			}
			inst, err := dnspolicy.Install(cfg, entries)
			if err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"installed": inst, "sources": counts})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "dns policy %s attached to %s %s: %d names (%d learned, %d follow_names, %d dns_allow)\n",
				inst.Mode, inst.Cgroup, viaText(inst.Via), inst.Entries, counts["learned"], counts["follow_names"], counts["dns_allow"])
			return nil
		}),
	}
	f.add(cmd, g)
	cmd.Flags().String("dns-policy", "off", "off, audit or enforce (default: the configuration's dns_policy)")
	g.Loader.Bind("dns_policy", "dns-policy")
	cmd.Flags().BoolVar(&force, "force", false, "enforce even with no learned question")
	return cmd
}

// dnsEntries gathers the allow-list: what each user asked while
// learning, follow_names, dns_allow; counts says how many of each.
func dnsEntries(cfg *config.Config, st *store.Store) ([]dnspolicy.Entry, map[string]int, error) {
	qs, _, err := st.Questions()
	if err != nil {
		return nil, nil, err
	}
	var all []dnspolicy.Entry
	for _, q := range qs {
		all = append(all, dnspolicy.Entry{UID: q.UID, Name: q.Name, Source: "learned"})
	}
	for i, fn := range cfg.FollowNames {
		uid := uint32(dnspolicy.AllUsers)
		if fn.User != "" && fn.User != "*" {
			if uid, err = config.LookupUID(fn.User); err != nil {
				return nil, nil, fmt.Errorf("follow_names[%d]: %w", i, err)
			}
		}
		all = append(all, dnspolicy.Entry{UID: uid, Name: fn.Name, Source: "follow_names"})
	}
	allow, err := cfg.DNSAllowEntries()
	if err != nil {
		return nil, nil, err
	}
	all = append(all, allow...)
	entries, bad := dnspolicy.Dedup(all)
	for _, b := range bad {
		slog.Warn("left out of the dns policy", "err", b) // a learned name no policy can match (a label with a dot)
	}
	counts := map[string]int{"learned": 0, "follow_names": 0, "dns_allow": 0}
	for _, e := range entries {
		counts[e.Source]++
	}
	return entries, counts, nil
}

func newDNSStatus(g *cli.Globals) *cobra.Command {
	var f dnsFlags
	cmd := &cobra.Command{
		Use:   "status [--cgroup PATH] [--netns NAME|PATH] [--json]",
		Short: "Show the attached DNS policy; exit 1 when it is not what dns_policy says",
		Args:  cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			mode, err := dnspolicy.ParseMode(e.Cfg.DNSPolicy)
			if err != nil {
				return err
			}
			r := dnspolicy.Status(f.config(e, mode))
			if f.asJSON {
				if err := printJSON(cmd.OutOrStdout(), r); err != nil {
					return err
				}
			} else {
				writeDNSStatus(cmd.OutOrStdout(), r)
			}
			if r.Problem != "" {
				return errors.New(r.Problem)
			}
			return nil
		}),
	}
	f.add(cmd, g)
	return cmd
}

func writeDNSStatus(w io.Writer, r dnspolicy.Report) {
	state := "not attached"
	if r.Attached {
		state = fmt.Sprintf("attached in %s %s, %d names", r.Mode, viaText(r.Via), r.Entries)
	}
	fmt.Fprintf(w, "dns policy: configured %s, %s (%s)\n", r.Configured, state, r.Cgroup)
	s := r.Stats
	fmt.Fprintf(w, "  queries %d: allowed %d, denied %d, audited %d, malformed %d; reports lost %d\n",
		s.Queries, s.Allowed, s.Denied, s.Audited, s.Malformed, s.Lost)
	if r.Problem != "" {
		fmt.Fprintf(w, "  PROBLEM: %s\n", r.Problem)
	}
}

// viaText says in words where the policy runs.
func viaText(via string) string {
	switch via {
	case dnspolicy.ViaFollower:
		return "via follower (inside the DNS follower's egress program)"
	case dnspolicy.ViaBoth:
		return "as own program and via follower"
	}
	return "as own program"
}

func newDNSRemove(g *cli.Globals) *cobra.Command {
	var f dnsFlags
	cmd := &cobra.Command{
		Use:   "remove [--cgroup PATH] [--netns NAME|PATH] [--json]",
		Short: "Detach the DNS policy (queries are no longer checked)",
		Args:  cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			if err := dnspolicy.Remove(f.config(e, dnspolicy.Off)); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]bool{"removed": true})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "dns policy removed: DNS queries are no longer checked")
			return nil
		}),
	}
	f.add(cmd, g)
	return cmd
}

func newDNSWatch(g *cli.Globals) *cobra.Command {
	var f dnsFlags
	var metricsAddr string
	var flush time.Duration
	cmd := &cobra.Command{
		Use:   "watch [--metrics-addr ADDR] [--flush D] [--json]",
		Short: "Record the queries the DNS policy stopped or audited, by user and name",
		Long: `watch reads the reports of the attached DNS policy (a pinned ring: reports
made while nobody watched wait there) and records them in the store every
--flush, for "denied" and "reconcile". Each is logged with uid and name
(--json prints them). A burst of distinct names under one parent domain
(50 or more within a minute) is the signature of DNS tunnelling: it is
logged as a warning and counted in egress_dns_tunnel_suspected_total.`,
		Args: cobra.NoArgs,
		RunE: withStore(g, true, func(cmd *cobra.Command, e *env, st *store.Store) error {
			w := newDNSRecorder(st, e.Log)
			mode, err := dnspolicy.ParseMode(e.Cfg.DNSPolicy)
			if err != nil {
				return err
			}
			w.status = func() dnspolicy.Report { return dnspolicy.Status(f.config(e, mode)) }
			_, stop, err := cli.MetricsOn(e.Log, metricsAddr, w)
			if err != nil {
				return err
			}
			defer stop()
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			// The ready line comes once the ring is open, not before.
			ring, err := dnspolicy.OpenWatch(f.config(e, dnspolicy.Off))
			if err != nil {
				return err
			}
			go w.flushEvery(ctx, flush)
			e.Log.Info("watching dns policy reports", "table", e.Cfg.Table, "netns", e.Cfg.Netns)
			out := cmd.OutOrStdout()
			err = ring.Run(ctx, func(d dnspolicy.Denial) {
				w.add(d)
				if f.asJSON {
					_ = printJSON(out, d)
				}
			})
			return errors.Join(err, w.flush())
		}),
	}
	f.add(cmd, g)
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address")
	cmd.Flags().DurationVar(&flush, "flush", 5*time.Second, "interval between writes to the store")
	return cmd
}

// dnsRecorder gathers reports between flushes, and the metrics.
type dnsRecorder struct {
	st     *store.Store
	log    *slog.Logger
	status func() dnspolicy.Report // for the metrics; nil: none

	mu      sync.Mutex
	pending []dnspolicy.Denial
	burst   *dnspolicy.BurstDetector
	total   map[[2]string]float64 // (uid, verdict) -> queries
	parents map[[2]string]float64 // (uid, parent) -> denied queries, bounded
	tunnels map[[2]string]float64 // (uid, parent) -> tunnel signatures
}

func newDNSRecorder(st *store.Store, log *slog.Logger) *dnsRecorder {
	return &dnsRecorder{st: st, log: log, burst: dnspolicy.NewBurstDetector(time.Minute, 50),
		total: map[[2]string]float64{}, parents: map[[2]string]float64{}, tunnels: map[[2]string]float64{}}
}

// maxParentSeries bounds the (uid, parent) series of the metrics.
const maxParentSeries = 1000

func (w *dnsRecorder) add(d dnspolicy.Denial) {
	verdict := "audited"
	if d.Dropped {
		verdict = "dropped"
	}
	if d.Malformed {
		verdict += "_malformed"
	}
	user := config.UserNames{}.Name(d.UID)
	w.log.Info("dns query not allowed", "uid", d.UID, "user", user, "name", d.Name, "qtype", d.QType, "proto", d.Proto,
		"server", d.Server, "verdict", verdict)
	uid := fmt.Sprint(d.UID)
	parent := dnspolicy.ParentOf(d.Name)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, d)
	w.total[[2]string{uid, verdict}]++
	k := [2]string{uid, parent}
	if _, ok := w.parents[k]; ok || len(w.parents) < maxParentSeries {
		w.parents[k]++
	}
	if n, hit := w.burst.Add(d.UID, d.Name, d.Time); hit {
		w.log.Warn("dns tunnelling signature: a burst of distinct names under one parent domain", "uid", d.UID, "user", user,
			"parent", parent, "distinct_names", n)
		w.tunnels[k]++
	}
}

func (w *dnsRecorder) flushEvery(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := w.flush(); err != nil {
				w.log.Warn("record dns denials: kept for the next flush", "err", err)
			}
		}
	}
}

func (w *dnsRecorder) flush() error {
	w.mu.Lock()
	ds := w.pending
	w.pending = nil
	w.mu.Unlock()
	if len(ds) == 0 {
		return nil
	}
	var recs []store.DNSDenial
	for _, c := range dnspolicy.Tally(ds) {
		recs = append(recs, store.DNSDenial{UID: c.UID, Name: c.Name, Hits: c.Hits, Dropped: c.Dropped, Malformed: c.Malformed,
			FirstSeen: c.First, LastSeen: c.Last})
	}
	if err := w.st.RecordDNSDenials(recs); err != nil {
		w.mu.Lock()
		if len(w.pending) < 100000 { // bounded: past it, the kernel's counters still hold the totals
			w.pending = append(ds, w.pending...)
		}
		w.mu.Unlock()
		return err
	}
	return nil
}

var (
	descDNSQueries = prometheus.NewDesc("egress_dns_policy_denied_total", "DNS queries the policy did not allow, by uid and verdict (dropped, audited, *_malformed), since watch started.", []string{"uid", "verdict"}, nil)
	descDNSParents = prometheus.NewDesc("egress_dns_policy_denied_parent_total", "DNS queries not allowed, by uid and parent domain (at most 1000 series).", []string{"uid", "parent"}, nil)
	descDNSTunnels = prometheus.NewDesc("egress_dns_tunnel_suspected_total", "Bursts of 50 or more distinct names under one parent domain within a minute, by uid and parent domain.", []string{"uid", "parent"}, nil)
	descDNSProblem = prometheus.NewDesc("egress_dns_policy_problem", "1 when what runs is not what dns_policy says (e.g. enforce configured and no program attached: DNS queries are not checked).", []string{"configured", "running"}, nil)
	descDNSKernel  = prometheus.NewDesc("egress_dns_policy_kernel_queries_total", "DNS queries the attached policy checked, by result, from its kernel counters.", []string{"result"}, nil)
)

func (w *dnsRecorder) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDNSQueries
	ch <- descDNSParents
	ch <- descDNSTunnels
	ch <- descDNSProblem
	ch <- descDNSKernel
}

func (w *dnsRecorder) Collect(ch chan<- prometheus.Metric) {
	if w.status != nil {
		r := w.status()
		running, problem := "none", 0.0
		if r.Attached {
			running = string(r.Mode)
		}
		if r.Problem != "" {
			problem = 1
		}
		ch <- prometheus.MustNewConstMetric(descDNSProblem, prometheus.GaugeValue, problem, string(r.Configured), running)
		for result, v := range map[string]uint64{"checked": r.Stats.Queries, "allowed": r.Stats.Allowed, "denied": r.Stats.Denied,
			"audited": r.Stats.Audited, "malformed": r.Stats.Malformed, "report_lost": r.Stats.Lost} {
			ch <- prometheus.MustNewConstMetric(descDNSKernel, prometheus.CounterValue, float64(v), result)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, v := range w.total {
		ch <- prometheus.MustNewConstMetric(descDNSQueries, prometheus.CounterValue, v, k[0], k[1])
	}
	for k, v := range w.parents {
		ch <- prometheus.MustNewConstMetric(descDNSParents, prometheus.CounterValue, v, k[0], k[1])
	}
	for k, v := range w.tunnels {
		ch <- prometheus.MustNewConstMetric(descDNSTunnels, prometheus.CounterValue, v, k[0], k[1])
	}
}

// ensureDNSPolicy is the last step of apply and restore: with dns_policy
// audit or enforce, the DNS policy is (re)loaded from the store with the
// table, so the names follow the baseline; when that fails, the command
// fails loudly (the table is applied, DNS is not checked as configured).
func ensureDNSPolicy(cmd *cobra.Command, e *env, pinDir string, force, quiet bool) error {
	mode, err := dnspolicy.ParseMode(e.Cfg.DNSPolicy)
	if err != nil || mode == dnspolicy.Off {
		return err
	}
	cfg := dnspolicy.Config{Cgroup: e.Cfg.Cgroup, Target: e.target, Table: e.Cfg.Table, PinRoot: pinDir, Mode: mode,
		MaxEntries: e.Cfg.DNSMaxNames, Log: e.Log}
	fail := func(err error) error {
		return fmt.Errorf("the table is applied, but the dns_policy %s allow-list is not loaded (see dns-policy status: DNS queries may NOT be checked): %w", mode, err)
	}
	st, err := e.ReadStore()
	if err != nil {
		return fail(err)
	}
	entries, counts, err := dnsEntries(e.Cfg, st)
	if err != nil {
		return fail(err)
	}
	if counts["learned"] == 0 && mode == dnspolicy.Enforce && !force {
		return fail(errors.New("no learned question in the store (--force enforces anyway)"))
	}
	inst, err := dnspolicy.Install(cfg, entries)
	if err != nil {
		return fail(err)
	}
	if !quiet {
		fmt.Fprintf(cmd.OutOrStdout(), "dns policy %s attached to %s %s: %d names\n", inst.Mode, inst.Cgroup, viaText(inst.Via), inst.Entries)
	}
	return nil
}

// warnDNSPolicyStays tells whoever removes the table that the DNS policy,
// which the table's removal leaves in place, still checks queries: an
// operator who removes the table to let everything out would otherwise
// meet queries still stopped, with no word of why.
func warnDNSPolicyStays(w io.Writer, e *env, pinDir string) {
	r := dnspolicy.Status(dnspolicy.Config{Cgroup: e.Cfg.Cgroup, Target: e.target, Table: e.Cfg.Table, PinRoot: pinDir})
	if r.Attached {
		fmt.Fprintf(w, "the DNS policy stays attached to %s (%s, %d names): DNS queries are still checked; egress-enforce dns-policy remove detaches it\n", r.Cgroup, r.Mode, r.Entries)
	}
}
