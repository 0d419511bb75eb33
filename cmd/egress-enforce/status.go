package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/options"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

// status is what status shows: the kernel's table, what the follower
// last saved, and the namespace's resolvers.
type status struct {
	*nft.Status
	// Follow is what the follower last saved, when one runs for the table.
	Follow *follow.Stats `json:"follow,omitempty"`
	dnsServers
}

func newStatus(g *cli.Globals) *cobra.Command {
	var asJSON, count bool
	cmd := &cobra.Command{
		Use:   "status [--netns NAME|PATH] [--json]",
		Short: "Show whether our table is installed, its mode, set sizes and the default counter",
		Args:  cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			st, err := e.kernel.Status(e.Cfg.Table, count)
			if err != nil {
				return err
			}
			s := status{Status: st, dnsServers: dnsServers{ResolvConf: options.ResolvConfFor(e.Cfg.ResolvConf, e.Cfg.Netns)}}
			if db, err := store.Open(e.Cfg.DB, store.Options{LockTimeout: 2 * time.Second}); err == nil {
				s.Follow, _ = follow.ReadStats(db, e.target, e.Cfg.Table)
			}
			if s.Servers, err = options.ResolvConfServers(s.ResolvConf); err != nil {
				return err
			}
			s.Servers = nonNil(s.Servers)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			writeStatus(cmd.OutOrStdout(), e.target, &s)
			return nil
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	cmd.Flags().BoolVar(&count, "count", false, "count set elements in the kernel instead of reading the set sizes apply wrote (slow for large sets)")
	return cmd
}

// writeStatus prints the status for people.
func writeStatus(w io.Writer, target nft.Target, s *status) {
	st := s.Status
	fmt.Fprintf(w, "resolvers of %s: %s (from %s)\n", target, addrList(s.Servers), s.ResolvConf)
	if !st.Present {
		fmt.Fprintf(w, "table inet %s is not installed in %s\n", st.Table, target)
		return
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
		var dl, al nft.Counter
		if st.DropsLogged != nil {
			dl = *st.DropsLogged
		}
		if st.AuditsLogged != nil {
			al = *st.AuditsLogged
		}
		fmt.Fprintf(w, "  under the log's rate limits: %d of the dropped and %d of the audited packets were logged\n", dl.Packets, al.Packets)
	}
	if f := s.Follow; f != nil {
		writeFollowStats(w, f)
	}
}

func writeFollowStats(w io.Writer, f *follow.Stats) {
	fmt.Fprintf(w, "  follower (at %s): %d name rules, %d answers used, %d addresses added, %d refreshed, %d left out by the bound\n",
		f.Updated.Local().Format(time.DateTime), f.Rules, f.Accepted, f.Added, f.Refreshed, f.BoundDropped)
	fmt.Fprintf(w, "    ignored answers: %d not from a resolver, %d with no matching query, %d with another question, %d malformed, %d in another network namespace; %d records of other owners\n",
		f.NotResolver, f.NoQuery, f.Mismatch, f.Malformed, f.OtherNetns, f.OwnerMismatch)
	fmt.Fprintf(w, "    mark check: %d packets dropped (a mark no authorization covers); queries: %d over their user's share, %d expired unanswered; %d TTLs capped\n",
		f.MarkDropped, f.OverShare, f.QueriesExpired, f.TTLCapped)
	fmt.Fprintf(w, "    answer-to-set latency p50 %.0f us, p99 %.0f us; %d connects let through by the mark before their element was in\n",
		f.LatencyP50, f.LatencyP99, f.Marked)
}
