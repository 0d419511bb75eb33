package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/dnspolicy"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/options"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// status is what status shows: the kernel's table, what the follower
// last saved, and the namespace's resolvers.
type status struct {
	*nft.Status
	// Follow is what the follower last saved, when one ran for the table.
	Follow *follow.Stats `json:"follow,omitempty"`
	// Follower says whether a follower runs, where its counters come
	// from, and why there are none.
	Follower followerState `json:"follower"`
	// DNSPolicy is the DNS policy of the table (dns-policy status).
	DNSPolicy dnspolicy.Report `json:"dns_policy"`
	// Staged are the services of staged enforcement by service, with
	// what the table does with each now.
	Staged []stagedService `json:"staged_services,omitempty"`
	// NameCheck: see status_namecheck.go.
	NameCheck *nameCheckState `json:"name_check,omitempty"`
	dnsServers
}

// followerState is what status knows of the follower besides its
// counters.
type followerState struct {
	// Running: a follower's cgroup is in the table's set follow_gate, so
	// the table accepts the follow mark.
	Running bool `json:"running"`
	// Store is the file the follower saves its counters to, and status
	// reads them from (the configured db).
	Store string `json:"store"`
	// Note says why there are no counters, or how old they are.
	Note string `json:"note,omitempty"`
}

func newStatus(g *cli.Globals) *cobra.Command {
	var asJSON, count bool
	var pinDir string
	cmd := &cobra.Command{
		Use:   "status [--netns NAME|PATH] [--pin-dir DIR] [--json] [--count]",
		Short: "Show whether our table is installed, its mode, set sizes, rule counters and the follower's counters",
		Long: `status reads our table from the kernel: its mode, the size of each set, the
packets each rule counted (the kernel restarts the counters when a table is
applied), what the default rules dropped or only logged (audit), and how many
of those reached the log (NFLOG) under its rate limit.

It also shows the DNS follower: whether one runs (its cgroup is in the set
follow_gate), and the counters it saves to the store (--db) within a second of
a change, with the time they were saved.

And the name check: how many elements the current generation name-checks,
whether a check is attached (pinned under --pin-dir by "egress-enforce
namecheck"), and its counters.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			st, err := e.kernel.Status(e.Cfg.Table, count)
			if err != nil {
				return err
			}
			s := status{Status: st, dnsServers: dnsServers{ResolvConf: options.ResolvConfFor(e.Cfg.ResolvConf, e.Cfg.Netns)}}
			s.readFollower(e)
			s.readStaging(e)
			s.readNameCheck(e, pinDir)
			if s.Servers, err = options.ResolvConfServers(s.ResolvConf); err != nil {
				return err
			}
			s.Servers = nonNil(s.Servers)
			s.DNSPolicy = dnspolicy.Status(dnspolicy.Config{Target: e.target, Table: e.Cfg.Table, Mode: dnspolicy.Mode(e.Cfg.DNSPolicy)})
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			writeStatus(cmd.OutOrStdout(), e.target, &s)
			if s.DNSPolicy.Configured != dnspolicy.Off || s.DNSPolicy.Attached || s.DNSPolicy.Problem != "" {
				writeDNSStatus(cmd.OutOrStdout(), s.DNSPolicy)
			}
			return nil
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	cmd.Flags().StringVar(&pinDir, "pin-dir", follow.DefaultPinRoot, "directory on a bpf file system where \"namecheck\" pins the name check")
	cmd.Flags().BoolVar(&count, "count", false, "count set elements in the kernel instead of reading the set sizes apply wrote (slow for large sets)")
	return cmd
}

// readFollower reads the follower's counters from the store, and says why
// there are none.
func (s *status) readFollower(e *env) {
	f := &s.Follower
	f.Store = e.Cfg.DB
	for _, set := range s.Sets {
		if set.Name == plan.SetFollowGate && set.Elements > 0 {
			f.Running = true
		}
	}
	if _, err := os.Stat(e.Cfg.DB); errors.Is(err, fs.ErrNotExist) {
		f.Note = fmt.Sprintf("no store at %s: the follower saves its counters in the store it runs with; pass that one with --db", e.Cfg.DB)
		return
	}
	db, err := store.Open(e.Cfg.DB, store.Options{LockTimeout: 2 * time.Second})
	if err == nil {
		s.Follow, err = follow.ReadStats(db, e.target, e.Cfg.Table)
	}
	switch {
	case err != nil:
		f.Note = fmt.Sprintf("the follower's counters cannot be read: %v", err)
	case s.Follow == nil:
		f.Note = fmt.Sprintf("no follower has saved counters for table inet %s in %s in %s", e.Cfg.Table, e.target, e.Cfg.DB)
	case !f.Running:
		f.Note = "these are the counters the follower saved last, when it stopped or died"
	}
}

// writeStatus prints the status for people.
func writeStatus(w io.Writer, target nft.Target, s *status) {
	st := s.Status
	fmt.Fprintf(w, "resolvers of %s: %s (from %s)\n", target, addrList(s.Servers), s.ResolvConf)
	if !st.Present {
		fmt.Fprintf(w, "table inet %s is not installed in %s: nothing is allowed, logged or dropped by it\n", st.Table, target)
		writeFollower(w, s)
		writeNameCheck(w, s)
		return
	}
	fmt.Fprintf(w, "table inet %s in %s: %s mode (chain output, policy %s)\n", st.Table, target, st.Mode, st.Policy)
	switch {
	case len(st.EnforceUIDs) > 0:
		fmt.Fprintf(w, "  enforced: %s; audited: everyone else\n", uids(st.EnforceUIDs))
	case len(st.AuditUIDs) > 0:
		fmt.Fprintf(w, "  audited: %s; enforced: everyone else\n", uids(st.AuditUIDs))
	}
	writeStaging(w, s)
	for _, s := range st.Sets {
		how := "the size apply gave the set; --count counts them"
		if s.Counted {
			how = "counted now"
		}
		fmt.Fprintf(w, "  set %s: %s (%s)\n", s.Name, plural(s.Elements, "element"), how)
	}
	for _, s := range st.Services {
		fmt.Fprintf(w, "  service %s: %s\n", textsafe.String(s.Service), plural(s.Elements, "element"))
	}
	writeRuleCounters(w, st)
	writeDefaults(w, st)
	writeFollower(w, s)
	writeNameCheck(w, s)
}

// writeRuleCounters lists the rules with the packets each counted; the
// follow-mark rules (one per cgroup level) are summed on one line.
func writeRuleCounters(w io.Writer, st *nft.Status) {
	fmt.Fprintf(w, "  chain output: %d rules; packets matched since the table was applied, by each rule with a counter:\n", len(st.Rules))
	type line struct {
		packets uint64
		rule    string
	}
	var lines []line
	var mark uint64
	marks := 0
	for _, c := range st.Counters {
		if plan.IsFollowMarkComment(c.Rule) {
			mark += c.Packets
			marks++
			continue
		}
		lines = append(lines, line{c.Packets, c.Rule})
	}
	if marks > 0 {
		lines = append(lines, line{mark, fmt.Sprintf("dns-followed: just resolved, accepted on the follow mark (%d rules, one per cgroup level)", marks)})
	}
	width := 1
	for _, l := range lines {
		width = max(width, len(strconv.FormatUint(l.packets, 10)))
	}
	for _, l := range lines {
		fmt.Fprintf(w, "    %*d  %s\n", width, l.packets, textsafe.String(l.rule))
	}
}

// writeDefaults says what the default rules did: dropped (enforce) or
// only logged (audit), and how many of those packets reached the log.
func writeDefaults(w io.Writer, st *nft.Status) {
	if st.Default == nil {
		fmt.Fprintln(w, "  default rules: none with a counter (not a table of ours?)")
		return
	}
	if st.Mode == plan.ModeEnforce || st.Mode == plan.ModeStaged {
		fmt.Fprintf(w, "  dropped by the default rules (no allow rule matched): %d packets (%d bytes), %s\n",
			st.Dropped.Packets, st.Dropped.Bytes, loggedText(st.Dropped, st.DropsLogged, st.LogGroup, "drop_log_rate", st.DropLogRate))
	}
	if st.Mode == plan.ModeAudit || st.Mode == plan.ModeStaged {
		fmt.Fprintf(w, "  audited by the default rules (no allow rule matched; logged, not blocked): %d packets (%d bytes), %s\n",
			st.Audited.Packets, st.Audited.Bytes, loggedText(st.Audited, st.AuditsLogged, st.LogGroup, "audit_log_rate", st.AuditLogRate))
	}
}

// loggedText says how many of all reached the log.
func loggedText(all nft.Counter, logged *nft.Counter, group uint16, rateKey string, rate uint64) string {
	switch {
	case logged == nil:
		return fmt.Sprintf("how many were logged is not counted (a table applied before %s; apply again to count it)", rateKey)
	case all.Packets == 0:
		return fmt.Sprintf("so none logged (NFLOG group %d)", group)
	case logged.Packets >= all.Packets:
		return fmt.Sprintf("all %d logged (NFLOG group %d)", all.Packets, group)
	}
	return fmt.Sprintf("%d logged (NFLOG group %d), %d not logged: over %s (%d/s)",
		logged.Packets, group, all.Packets-logged.Packets, rateKey, rate)
}

// writeFollower says whether a follower runs and what it counted.
func writeFollower(w io.Writer, s *status) {
	f := s.Follower
	run := "not running (set follow_gate is empty: the table accepts no follow mark)"
	switch {
	case f.Running:
		run = "running (its cgroup is in set follow_gate: the table accepts the follow mark from it)"
	case !s.Present || !hasSet(s.Status, plan.SetFollowGate):
		run = "nothing to follow (the table has no name rules)"
	}
	fmt.Fprintf(w, "follower: %s\n", run)
	if s.Follow == nil {
		fmt.Fprintf(w, "  no counters: %s\n", f.Note)
		return
	}
	if f.Note != "" {
		fmt.Fprintf(w, "  %s\n", f.Note)
	}
	writeFollowStats(w, s.Follow, s.FollowMarkAccepted)
}

func hasSet(st *nft.Status, name string) bool {
	for _, s := range st.Sets {
		if s.Name == name {
			return true
		}
	}
	return false
}

// writeFollowStats prints the follower's counters; markRules is the
// kernel's counter of the mark rules now (nil: no table, or none).
func writeFollowStats(w io.Writer, f *follow.Stats, markRules *nft.Counter) {
	fmt.Fprintf(w, "  counters saved at %s (%s ago), since the follower started; generation %d, %s:\n",
		f.Updated.Local().Format(time.DateTime), time.Since(f.Updated).Round(100*time.Millisecond), f.Generation, plural(f.Rules, "name rule"))
	fmt.Fprintf(w, "    answers: %d used (their addresses authorized %d times), %d not for a name rule of the asking user, %d used but not reported to the follower (ring buffer full)\n",
		f.Accepted, f.Authorized, f.NoRule, f.Lost)
	fmt.Fprintf(w, "    answers ignored: %d not from a configured resolver, %d with no matching query, %d with another question, %d malformed, %d in another network namespace; %d address records of other owners left out\n",
		f.NotResolver, f.NoQuery, f.Mismatch, f.Malformed, f.OtherNetns, f.OwnerMismatch)
	fmt.Fprintf(w, "    queries: %d remembered, %d refused (over their user's share), %d expired unanswered\n",
		f.Queries, f.OverShare, f.QueriesExpired)
	fmt.Fprintf(w, "    set elements: %d added, %d refreshed, %d left out by follow_max_per_name, %d TTLs capped by follow_ttl_max, %d failed to be added\n",
		f.Added, f.Refreshed, f.BoundDropped, f.TTLCapped, f.NftErrors)
	fmt.Fprintf(w, "    answer-to-set latency: p50 %s, p99 %s\n", micros(f.LatencyP50), micros(f.LatencyP99))
	fmt.Fprintf(w, "    follow mark: %d connects marked (an answer authorized their destination), %s; the mark check dropped %d packets (a mark no authorization covers)\n",
		f.Marked, markRulesText(markRules), f.MarkDropped)
}

// markRulesText says what the mark rules accepted, from the kernel.
func markRulesText(c *nft.Counter) string {
	if c == nil {
		return "the table has no follow-mark rules"
	}
	return fmt.Sprintf("%d packets accepted by the mark rules (kernel counter since the table was applied; a marked connect whose destination a set already holds is accepted by the set)", c.Packets)
}

// plural writes n things.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// micros writes a latency in microseconds; "-" for none measured.
func micros(us float64) string {
	if us == 0 {
		return "-"
	}
	return time.Duration(us * 1e3).Round(time.Microsecond).String()
}
