package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/options"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

// dnsServers says where the allowed DNS servers came from, for the log
// and JSON: a namespace's resolv.conf is not the host's.
type dnsServers struct {
	ResolvConf string       `json:"resolv_conf"`
	Servers    []netip.Addr `json:"dns_servers"`
}

func dnsOf(p *plan.Plan) dnsServers {
	return dnsServers{p.ResolvConf, nonNil(p.DNSServers())}
}

// diffJSON is a diff with where the plan's DNS servers came from.
type diffJSON struct {
	*plan.Diff
	dnsServers
}

// built is a plan with what it was built from.
type built struct {
	plan        *plan.Plan
	opts        plan.Options
	baselineErr error
}

// planOptions reads the configuration and the flags that shape a plan.
func planOptions(cmd *cobra.Command, e *env) (plan.Options, error) {
	opts, err := options.FromConfig(e.Cfg)
	if err != nil {
		return opts, fmt.Errorf("configuration: %w", err)
	}
	opts.UserName, opts.Source = config.UserNames{}.Name, e.Cfg.DB
	if err := stagedUsers(cmd, &opts); err != nil {
		return opts, err
	}
	if opts.Match != plan.MatchUser && opts.Match != "" {
		cg, err := nft.HostCgroups()
		if err != nil {
			return opts, fmt.Errorf("match %s: %w", opts.Match, err)
		}
		// A mount nft cannot resolve paths under fails when the script
		// is written; apply (netlink) works anyway.
		opts.CgroupRoot, _ = cg.Root()
	}
	opts.Now, err = e.Now()
	return opts, err
}

// buildPlan reads the baseline (the store, or the exports of --from) and
// builds the plan. A baseline that cannot be read is returned in
// baselineErr with an empty plan, for the pre-apply check.
func buildPlan(cmd *cobra.Command, e *env) (*built, error) {
	opts, err := planOptions(cmd, e)
	if err != nil {
		return nil, err
	}
	e.Log.Info("dns servers", "resolv_conf", opts.ResolvConf, "servers", fmt.Sprint(opts.DNSServers))
	if from, _ := cmd.Flags().GetStringArray("from"); len(from) > 0 {
		m, source, err := baseline.ReadFleet(from, func(w string) { slog.Warn(w) })
		if err != nil {
			return nil, err
		}
		opts.Hosts, opts.AllHosts, opts.Source = m.Hosts, m.AllHosts, source
		return &built{plan: plan.Build(m.Flows, opts), opts: opts}, nil
	}
	var flows []store.Flow
	var granted baseline.Granted
	st, err := e.ReadStore()
	if err == nil {
		flows, err = st.Flows()
	}
	if err == nil {
		granted, err = grantedNow(st, e, opts)
	}
	return &built{plan: plan.Build(baseline.SelectGranted(flows, granted, opts.ServiceDepth), opts), opts: opts, baselineErr: err}, nil
}

// readPlan builds the plan of a command that shows it: a baseline that
// cannot be read is an error.
func readPlan(cmd *cobra.Command, e *env) (*plan.Plan, error) {
	b, err := buildPlan(cmd, e)
	if err == nil {
		err = b.baselineErr
	}
	if err != nil {
		return nil, err
	}
	return running(b.plan)
}

// running is a per-service plan as the kernel would hold it now: the
// elements of the services that run (see nft.CgroupIDs.Resolve).
func running(p *plan.Plan) (*plan.Plan, error) {
	if !p.ByService() {
		return p, nil
	}
	cg, err := nft.HostCgroups()
	if err != nil {
		return nil, err
	}
	p, _ = cg.Resolve(p)
	return p, nil
}

// scriptable refuses a per-service script nft could not load: one whose
// cgroup paths nft would look for in the wrong place.
func scriptable(p *plan.Plan) error {
	if !p.ByService() {
		return nil
	}
	cg, err := nft.HostCgroups()
	if err == nil {
		_, err = cg.Root()
	}
	return err
}

// stagedUsers reads --enforce-users and --audit-users into opts.
func stagedUsers(cmd *cobra.Command, opts *plan.Options) error {
	for flag, dst := range map[string]*[]uint32{"enforce-users": &opts.EnforceUIDs, "audit-users": &opts.AuditUIDs} {
		users, _ := cmd.Flags().GetStringSlice(flag)
		for _, u := range users {
			uid, err := config.LookupUID(u)
			if err != nil {
				return fmt.Errorf("--%s: %w", flag, err)
			}
			*dst = append(*dst, uid)
		}
	}
	for flag, dst := range map[string]*[]string{"enforce-services": &opts.EnforceServices, "audit-services": &opts.AuditServices} {
		svcs, _ := cmd.Flags().GetStringSlice(flag)
		for _, s := range svcs {
			svc, err := plan.ParseService(s)
			if err != nil {
				return fmt.Errorf("--%s: %w", flag, err)
			}
			*dst = append(*dst, svc)
		}
	}
	return opts.Check()
}

func newGenerate(g *cli.Globals) *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "generate [--mode audit|enforce] [--enforce-users U,..|--audit-users U,..|--enforce-services S,..|--audit-services S,..] [--min-hits N] [--since D] [--from FILE ...] [--netns NAME|PATH] [-o FILE] [--json]",
		Short: "Print the nft script (or the plan as JSON) built from the baseline",
		Long: `generate prints the table egress-enforce would apply, as an nft script that
"nft -f" loads (it replaces the table atomically), for review and version
control. Every set element carries a comment with its hits, last-seen date
and hostnames (and, from --from exports, how many hosts saw it). --json
prints the plan instead.

--netns NAME builds the table for that namespace: its DNS servers come from
/etc/netns/NAME/resolv.conf when it exists (what "ip netns exec NAME" shows
its processes), else /etc/resolv.conf; a configured resolv_conf wins. The
script's header and the JSON say which file was read.

--from reads exports of other hosts; each is checked (host and user names,
addresses without zones, protocols) and refused if it holds anything else.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			p, err := readPlan(cmd, e)
			if err != nil {
				return err
			}
			w, err := cli.Output(cmd, out, 0o644)
			if err != nil {
				return err
			}
			defer w.Close()
			if asJSON {
				err = printJSON(w, p)
			} else if err = scriptable(p); err == nil {
				err = p.Text(w)
			}
			if err != nil {
				return fmt.Errorf("write plan: %w", err)
			}
			return nil
		}),
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of standard output")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

func newDiff(g *cli.Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff [--mode audit|enforce] [--enforce-users U,..|--audit-users U,..|--enforce-services S,..|--audit-services S,..] [--min-hits N] [--since D] [--from FILE ...] [--netns NAME|PATH] [--json]",
		Short: "Show what apply would change against the table in the kernel",
		Long: `diff compares the table apply would build with the one in the kernel: set
elements added and removed (with the comment saying why each is there), rules
added and removed, and a mode change. Exit status 0 either way.`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(cmd *cobra.Command, e *env) error {
			p, err := readPlan(cmd, e)
			if err != nil {
				return err
			}
			return writeDiff(cmd, e, p, asJSON, "")
		}),
	}
	planFlags(cmd, g)
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the diff as JSON")
	return cmd
}

// writeDiff prints what applying p would change, after head (not in
// JSON).
func writeDiff(cmd *cobra.Command, e *env, p *plan.Plan, asJSON bool, head string) error {
	p, err := running(p) // what apply would put in the kernel now
	if err != nil {
		return err
	}
	d, err := nft.Diff(e.kernel, p)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), diffJSON{d, dnsOf(p)})
	}
	fmt.Fprint(cmd.OutOrStdout(), head)
	return d.Write(cmd.OutOrStdout())
}
