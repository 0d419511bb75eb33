package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/namecheck"
)

func newNameCheck(g *cli.Globals) *cobra.Command {
	var fl daemonFlags
	cmd := &cobra.Command{
		Use:   "namecheck [--cgroup PATH] [--netns NAME|PATH] [--pin-dir DIR] [--metrics-addr ADDR] [--json]",
		Short: "Check in the kernel that connections present a name their user learned (TLS SNI, HTTP Host)",
		Long: `namecheck attaches an eBPF program to the egress of a cgroup v2 directory
(default: the root of the cgroup2 mount) that checks, for the name-checked
elements of the table's current generation (name_check: audit or enforce;
"generate" lists them), the name a TCP connection presents on its first data:
the TLS ClientHello's server_name, or the Host header of a plain HTTP request.
It must be one of the element's names, or of its user's follow_names rules on
that port (learned ones included). The addresses the DNS follower opens
("egress-enforce follow", sharing --pin-dir) are checked too, from the DNS
answer on (the first connection included): against the user's follow_names
rules on that port and the names learned there. Otherwise, or when the first data
carries no name the check can read (not TLS or HTTP, no SNI, a request in
absolute form), the connection is refused: logged and counted in audit;
also dropped in enforce (its segments and every later one: the client gets
no answer and gives up, a cgroup program cannot reset a connection).

Not covered: TLS with an encrypted ClientHello (ECH, whose outer name is
checked), QUIC and other UDP protocols, protocols without a visible name,
and later requests of a kept-alive plain HTTP connection. Connections opened
before namecheck started are left alone.

The check is pinned under --pin-dir (a bpf file system): if namecheck dies,
the check stays attached with its last destinations, and a new namecheck
takes it over. A clean stop (SIGINT, SIGTERM) detaches it: names are no
longer checked (the table still checks addresses).

Each refused connection is logged (uid, destination, the name presented),
recorded in the store every flush_interval for "egress-enforce denied", and,
with --json, printed as a JSON object; --metrics-addr serves the counters.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			st, err := e.WriteStore()
			if err != nil {
				return err
			}
			cgroup := fl.cgroup
			if cgroup == "" {
				if cgroup, err = cgroupbpf.Mount(); err != nil {
					return err
				}
			}
			col := namecheck.NewCollector()
			_, stop, err := cli.MetricsOn(e.Log, fl.metricsAddr, col)
			if err != nil {
				return err
			}
			defer stop()
			print := cli.Printer(cmd.OutOrStdout(), fl.asJSON, refusedLine)
			e.Log.Info("name check", "cgroup", cgroup, "netns", e.Cfg.Netns, "table", e.Cfg.Table)
			return namecheck.Run(cmd.Context(), namecheck.RunConfig{
				Cgroup: cgroup, Target: e.target, Table: e.Cfg.Table, Store: st, Log: e.Log, Record: true, Flush: e.Cfg.FlushInterval,
				OnChecker: col.Attach, PinRoot: fl.pinDir, OnEvent: func(ev namecheck.Event) { col.Note(ev); print(ev) },
			})
		}),
	}
	fl.add(cmd, g, "checked", "the check is pinned (it outlives a namecheck that dies)", "each refused connection")
	return cmd
}

// refusedLine is the line for a refused connection.
func refusedLine(e namecheck.Event) string {
	action := "audited"
	if e.Enforced {
		action = "dropped"
	}
	name := textsafe.String(e.Name)
	if name == "" {
		name = "(no name)"
	}
	return fmt.Sprintf("%s %s uid %d %s %s presented %s %s (%s)", time.Now().Format(time.TimeOnly), action, e.UID,
		plan.ProtoName(e.Proto), netip.AddrPortFrom(e.IP, e.Port), e.Kind, name, e.Verdict)
}
