package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

func newServices(g *cli.Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "services [--netns NAME|PATH] [--json]",
		Short: "Keep the per-service sets true to the services' cgroups (restarts change their ids)",
		Long: `services keeps the service sets of the current generation (match service or
user,service) true to the cgroups that exist. systemd removes a unit's cgroup
and creates it again on every restart, with a new id, which is what the
table's elements hold: when a service's cgroup appears, its elements are
added with the new id; when it goes, they are removed (a service that is not
running has no elements). Inotify on the services' parent directories tells
at once; every 2 s a check catches what it missed. A new generation is picked
up within 2 s.

"egress-enforce follow" does the same while it runs: run this command on a
host that does not follow names. Each change is printed (--json: as JSON).`,
		Args: cobra.NoArgs,
		RunE: withStore(g, false, func(cmd *cobra.Command, e *env, st *store.Store) error {
			cg, err := nft.HostCgroups()
			if err != nil {
				return err
			}
			e.Log.Info("keeping services", "netns", e.Cfg.Netns, "table", e.Cfg.Table, "cgroup2", cg.Mount)
			return keepServices(cmd.Context(), st, e.kernel, cg, e.Cfg.Table, e.Log, cli.Printer(cmd.OutOrStdout(), asJSON, changeLine))
		}),
	}
	netnsFlag(cmd, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each change as JSON")
	return cmd
}

// changeLine is the line for a change of a service's elements.
func changeLine(c nft.ServiceChange) string {
	what := fmt.Sprintf("started (cgroup id %d)", c.To)
	switch {
	case c.To == 0:
		what = "stopped: elements removed"
	case c.From != 0:
		what = fmt.Sprintf("restarted (cgroup id %d, was %d)", c.To, c.From)
	}
	return fmt.Sprintf("%s service %s %s: %d elements, %s after the change was seen", time.Now().Format(time.TimeOnly),
		textsafe.String(c.Service), what, c.Elements, c.Took.Round(time.Microsecond))
}

// keepGenerationEvery is how often keepServices looks for a new generation.
const keepGenerationEvery = 2 * time.Second

// keepServices runs a Keeper on the current generation's plan, and a new
// one whenever the generation changes, until ctx ends. A keeper that
// fails is said loudly and started again.
func keepServices(ctx context.Context, st *store.Store, k *nft.Netlink, cg nft.CgroupIDs, table string, log *slog.Logger, onChange func(nft.ServiceChange)) error {
	for ctx.Err() == nil {
		g, p, err := currentPlan(st, k.Target(), table)
		if err != nil {
			log.Error("services: read the current generation", "err", err)
		}
		if p == nil || !p.ByService() {
			sleep(ctx, keepGenerationEvery)
			continue
		}
		kctx, cancel := context.WithCancel(ctx)
		go func() {
			defer cancel()
			for kctx.Err() == nil {
				sleep(kctx, keepGenerationEvery)
				if now, _, err := currentPlan(st, k.Target(), table); err == nil && now != g {
					return
				}
			}
		}()
		keeper := k.NewKeeper(p, cg)
		// Said once the sets hold the ids of the cgroups that exist now:
		// from then on every restart is seen and printed (a restart before
		// Start read the ids is only the id Start installs).
		err = keeper.Start()
		if err == nil {
			log.Info("services: keeping", "generation", g, "services", len(keeper.Services()))
			err = keeper.Run(kctx, onChange)
		}
		if err != nil {
			log.Error("services: the sets could not be kept current; trying again", "generation", g, "err", err)
			sleep(kctx, time.Second)
		}
		cancel()
	}
	return nil
}

// currentPlan is the number and plan of the target's current generation
// (0 and nil: none, or the table was removed).
func currentPlan(st *store.Store, t nft.Target, table string) (uint64, *plan.Plan, error) {
	g, err := rollout.Current(st, t, table)
	if err != nil || g == nil || g.Mode == rollout.ModeRemoved {
		return 0, nil, err
	}
	p, err := rollout.LoadPlan(st, g.Effective())
	return g.N, p, err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
