package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce"
	"github.com/egresskit/egress/internal/cli"
)

func newWatch(g *cli.Globals) *cobra.Command {
	var metricsAddr string
	var asJSON, quiet bool
	var topK int
	cmd := &cobra.Command{
		Use:   "watch [--netns NAME|PATH] [--metrics-addr ADDR] [--json]",
		Short: "Monitor denied (and audited) packets: print them, record them, export metrics",
		Long: `watch subscribes to the NFLOG group of our table's default rules and decodes
every packet they log: drop or audit, user, protocol, destination and port.
It prints each one (--json: one JSON object a line; --quiet: none), counts
them by user and destination, and records them in the store every
flush_interval, for "egress-enforce denied" and reconciliation.

--metrics-addr serves Prometheus metrics: denied and audited packets by user
and destination (the top --top-k, the rest as "other"), set sizes and rule
counters read from the kernel, the current generation, mode and the time of
the last apply.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.Load(cmd)
			if err != nil {
				return err
			}
			target := enforce.Target{Netns: cfg.Netns}
			st, err := cli.WriteStore(cfg)
			if err != nil {
				return err
			}
			names := config.UserNames{}
			mon := enforce.NewMonitor()
			out := make(chan enforce.LogEntry, 1024)
			go func() {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for e := range out {
					if asJSON {
						_ = enc.Encode(e)
						continue
					}
					user := "none"
					if e.UID != nil {
						user = fmt.Sprintf("%d (%s)", *e.UID, names.Name(*e.UID))
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %-5s uid %s %s %s\n", e.Time.Local().Format(time.TimeOnly), e.Action, user,
						enforce.ProtoName(e.Proto), netip.AddrPortFrom(e.Dst, e.Port))
				}
			}()
			defer close(out)
			ctx := cmd.Context()
			if metricsAddr != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(&enforce.Collector{Monitor: mon, Target: target, Table: cfg.Table, Store: st, UserName: names.Name, TopK: topK},
					collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				stop, addr, err := cli.ServeMetrics(metricsAddr, reg)
				if err != nil {
					return err
				}
				defer stop()
				log.Info("serving metrics", "addr", "http://"+addr+"/metrics")
			}
			log.Info("watching", "netns", cfg.Netns, "nflog_group", cfg.NFLOGGroup, "db", cfg.DB)
			return enforce.Watch(ctx, target, mon, enforce.WatchOptions{
				Group: uint16(cfg.NFLOGGroup), Store: st, Flush: cfg.FlushInterval,
				OnEntry: func(e enforce.LogEntry) {
					if quiet {
						return
					}
					select {
					case out <- e:
					default: // a slow terminal must not stall the monitor
					}
				},
				OnFlushError: func(err error) { log.Warn("keeping observations for the next flush", "err", err) },
			})
		},
	}
	netnsFlag(cmd, g)
	f := cmd.Flags()
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9310)")
	f.BoolVar(&asJSON, "json", false, "print each logged packet as a JSON object")
	f.BoolVar(&quiet, "quiet", false, "print nothing per packet")
	f.IntVar(&topK, "top-k", 20, "destinations and users with their own metric series; the rest is \"other\"")
	f.String("flush-interval", "5s", "how often observations are written to the store")
	g.Loader.Bind("flush_interval", "flush-interval")
	return cmd
}

func newDenied(g *cli.Globals) *cobra.Command {
	var asJSON bool
	var since time.Duration
	var top int
	cmd := &cobra.Command{
		Use:   "denied [--since D] [--json]",
		Short: "Summarize what the monitor recorded: most denied destinations, by user, rate around the last apply",
		Long: `denied reads what "egress-enforce watch" recorded: the destinations the
allow-list did not cover, most denied first, with the names they were resolved
from and the processes the learner saw for them; the same by user; and the
logged packets per minute before and after the last apply (the error rate
after a policy change). --since keeps destinations seen within that long and
sets the window before the apply (default: everything, and an hour).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.Load(cmd)
			if err != nil {
				return err
			}
			st, err := cli.ReadStore(cfg)
			if err != nil {
				return err
			}
			names := config.UserNames{}
			sum, err := enforce.Denied(st, enforce.Target{Netns: cfg.Netns}, cfg.Table, since, time.Now(), names.Name)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sum)
			}
			return sum.Write(cmd.OutOrStdout(), top)
		},
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().DurationVar(&since, "since", 0, "only destinations seen within this long (e.g. 24h)")
	cmd.Flags().IntVar(&top, "top", 20, "destinations to list")
	return cmd
}
