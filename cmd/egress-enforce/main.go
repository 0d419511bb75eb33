// Command egress-enforce turns the baseline learned by egress-learn into an
// nftables allow-list table of its own, shows it, diffs it against the
// kernel, and applies it atomically: first in audit mode (log only), then
// in enforce mode (default drop).
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/buildinfo"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/store"
)

func main() { cli.Main(newRoot()) }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "egress-enforce",
		Short: "Turn the learned egress baseline into an nftables allow-list",
		Long: `egress-enforce builds one nftables table of its own (default inet egress) from
the baseline egress-learn recorded, and never touches any other table. Its
output chain allows replies, loopback, IPv6 neighbour discovery, the DNS
servers of resolv.conf, NTP servers and always_allow entries, then every
learned (user, address, protocol, port) through one set lookup per family;
what is left is counted and logged (NFLOG), and dropped in enforce mode.

Roll out in two steps: apply --mode audit (nothing is blocked; watch the
default rule's counter and log), then apply --mode enforce.

` + cli.ConfigHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := cli.NewGlobals(root)
	pf := root.PersistentFlags()
	pf.String("table", plan.DefaultTable, "name of our table (family inet)")
	g.Loader.Bind("table", "table")
	root.AddCommand(newGenerate(g), newApply(g), newStatus(g), newDiff(g), newRemove(g),
		newConfirm(g), newHistory(g), newRollback(g), newConfirmGuard(g), newRestore(g), newWatch(g), newDenied(g), newReconcile(g), newFollow(g), newNameCheck(g),
		newPrune(g), newPromote(g), newServices(g), newDNSPolicy(g))
	buildinfo.Attach(root)
	return root
}

// env is what a command of egress-enforce works with: the configuration,
// its logger, and the network namespace with its nftables.
type env struct {
	*cli.Env
	target nft.Target
	kernel *nft.Netlink
	st     *store.Store // the store for writing, once opened (applyStore)
}

// runE is the RunE of a command: the configuration is loaded and the
// target is known before body runs.
func runE(g *cli.Globals, body func(cmd *cobra.Command, e *env) error) func(*cobra.Command, []string) error {
	return g.RunE(func(cmd *cobra.Command, ce *cli.Env) error {
		t := nft.Target{Netns: ce.Cfg.Netns}
		return body(cmd, &env{Env: ce, target: t, kernel: nft.Open(t)})
	})
}

// withStore is a runE whose body also gets the configured store, opened
// for writing (created and migrated as needed) or for reading.
func withStore(g *cli.Globals, write bool, body func(cmd *cobra.Command, e *env, st *store.Store) error) func(*cobra.Command, []string) error {
	return runE(g, func(cmd *cobra.Command, e *env) error {
		open := e.ReadStore
		if write {
			open = e.WriteStore
		}
		st, err := open()
		if err != nil {
			return err
		}
		return body(cmd, e, st)
	})
}

// withExistingStore is withStore for writing to a store that must exist:
// a command that changes what is recorded (confirm, rollback, prune) does
// not create an empty store at a mistyped --db.
func withExistingStore(g *cli.Globals, body func(cmd *cobra.Command, e *env, st *store.Store) error) func(*cobra.Command, []string) error {
	return runE(g, func(cmd *cobra.Command, e *env) error {
		if _, err := os.Stat(e.Cfg.DB); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("open store %s: %w (run egress-learn run or egress-enforce apply first, or pass --db)", e.Cfg.DB, store.ErrNotExist)
		}
		st, err := e.WriteStore()
		if err != nil {
			return err
		}
		return body(cmd, e, st)
	})
}

// planFlags are the flags that shape a plan.
func planFlags(cmd *cobra.Command, g *cli.Globals) {
	f := cmd.Flags()
	f.String("mode", "audit", "audit (log only) or enforce (log and drop)")
	f.StringSlice("enforce-users", nil, "with --mode enforce: enforce only for these users (names or UIDs); audit everyone else")
	f.StringSlice("audit-users", nil, "with --mode enforce: keep these users (names or UIDs) in audit; enforce everyone else")
	f.StringSlice("enforce-services", nil, "with --mode enforce and match service or user,service: enforce only for these services (cgroup v2 paths such as system.slice/nginx.service, or unit names); audit everything else")
	f.StringSlice("audit-services", nil, "with --mode enforce and match service or user,service: keep these services in audit; enforce everything else (the safer way: a restarted service whose id the table lost is enforced)")
	f.Int("min-hits", 1, "leave out flows seen fewer times")
	f.String("since", "", "leave out flows not seen within this long (e.g. 720h); default: keep all")
	f.StringArray("from", nil, "build from these exports of \"egress-learn export\" (one per host; repeat) instead of the store")
	f.String("match", "user", "who learned flows are allowed for: user, service (a systemd unit or container: the cgroup v2 path cut at the first *.service or *.scope), or user,service")
	g.Loader.Bind("mode", "mode")
	g.Loader.Bind("match", "match")
	g.Loader.Bind("min_hits", "min-hits")
	g.Loader.Bind("since", "since")
}

func netnsFlag(cmd *cobra.Command, g *cli.Globals) {
	cmd.Flags().String("netns", "", "network namespace: a name under /run/netns or a path such as /proc/PID/ns/net (default: this host's); "+
		"with a name, the DNS servers come from /etc/netns/NAME/resolv.conf when it exists")
	g.Loader.Bind("netns", "netns")
}

var printJSON = cli.PrintJSON

// addrList writes addresses for people: "none" for none.
func addrList(a []netip.Addr) string {
	if len(a) == 0 {
		return "none"
	}
	s := make([]string, len(a))
	for i, v := range a {
		s[i] = v.String()
	}
	return strings.Join(s, ", ")
}

func uids(u []uint32) string {
	names := config.UserNames{}
	s := make([]string, len(u))
	for i, v := range u {
		s[i] = names.Name(v)
	}
	return strings.Join(s, ",")
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
