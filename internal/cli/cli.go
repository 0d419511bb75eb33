// Package cli holds what the two commands share: the persistent flags
// bound to the configuration, and loading it.
package cli

import (
	"log/slog"
	"os"

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
