// Package cli holds what the two commands share: the persistent flags
// bound to the configuration, and loading it.
package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/store"
)

// Globals are the persistent flags of a command tree.
type Globals struct {
	Loader     *config.Loader
	configFile string
}

// NewGlobals adds --config, --db and --log-level to root.
func NewGlobals(root *cobra.Command) *Globals {
	g := &Globals{Loader: config.NewLoader()}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "YAML configuration file (default "+config.DefaultFile+" when present)")
	pf.String("db", store.DefaultPath, "baseline store file")
	pf.String("log-level", "info", "log level: debug, info, warn, error")
	g.Loader.Bind("db", "db")
	g.Loader.Bind("log_level", "log-level")
	return g
}

// Load reads the configuration, with the flags of the running command, and
// makes a logger for it.
func (g *Globals) Load(cmd *cobra.Command) (*config.Config, *slog.Logger, error) {
	cfg, err := g.Loader.Load(g.configFile, cmd.Flags())
	if err != nil {
		return nil, nil, err
	}
	level, _ := cfg.SlogLevel()
	return cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// ConfigHelp is the paragraph on settings both commands print in --help.
const ConfigHelp = `Settings come from a YAML file (--config, default ` + config.DefaultFile + ` when
present), EGRESS_* environment variables (EGRESS_DB, EGRESS_MODE, ...) and flags,
flags winning. An unknown key or an invalid value is an error that names it.`

// ServeMetrics serves reg's metrics on addr (port 0 picks one) at /metrics
// until stop is called; bound is the address it listens on.
func ServeMetrics(addr string, reg *prometheus.Registry) (stop func(), bound string, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, l.Addr().String(), nil
}
