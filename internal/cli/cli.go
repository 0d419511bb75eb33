// Package cli holds what the two commands share: the persistent flags
// bound to the configuration, and loading it.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/internal/buildinfo"
	"github.com/egresskit/egress/internal/phase"
	"github.com/egresskit/egress/store"
)

// Main runs the command tree until SIGINT or SIGTERM cancels its
// context; an error is logged and the process exits 1.
//
// EGRESS_CPUPROFILE=FILE writes a CPU profile of the whole run to FILE
// (go tool pprof reads it): for diagnosing a slow command.
func Main(root *cobra.Command) {
	phase.Mark("main")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := cpuProfile(os.Getenv("EGRESS_CPUPROFILE"))
	err := root.ExecuteContext(ctx)
	stopProfile()
	stop()
	phase.Mark("exit")
	if err != nil {
		slog.Error(err.Error())
		os.Exit(1)
	}
}

// cpuProfile starts a CPU profile into path ("" does nothing); the
// returned function ends it.
func cpuProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		slog.Warn("EGRESS_CPUPROFILE: no profile", "err", err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// SoftMemoryLimit sets the process's soft heap limit, unless GOMEMLIMIT
// says otherwise.
func SoftMemoryLimit(bytes int64) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(bytes)
	}
}

// Globals are the persistent flags of a command tree.
type Globals struct {
	Loader     *config.Loader
	configFile string
	now        string
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
	// Tests move the clock: --now makes "now" a fixed time (RFC 3339).
	pf.StringVar(&g.now, "now", "", "pretend the time is this (RFC 3339), for tests")
	_ = pf.MarkHidden("now")
	return g
}

// Now is the time commands work at: --now when given.
func (g *Globals) Now() (time.Time, error) {
	if g.now == "" {
		return time.Now(), nil
	}
	t, err := time.Parse(time.RFC3339, g.now)
	if err != nil {
		return time.Time{}, fmt.Errorf("--now: %q is not an RFC 3339 time", g.now)
	}
	return t, nil
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

// Env is what a command's body works with: the configuration, loaded
// with the command's flags, and its logger.
type Env struct {
	Cfg *config.Config
	Log *slog.Logger
	g   *Globals
}

// RunE is a cobra RunE that loads the configuration, then runs body: the
// preamble every command shares.
func (g *Globals) RunE(body func(cmd *cobra.Command, e *Env) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := g.Load(cmd)
		if err != nil {
			return err
		}
		return body(cmd, &Env{Cfg: cfg, Log: log, g: g})
	}
}

// Now is the time the command works at (--now when given).
func (e *Env) Now() (time.Time, error) { return e.g.Now() }

// ReadStore opens the configured store for reading.
func (e *Env) ReadStore() (*store.Store, error) { return ReadStore(e.Cfg) }

// WriteStore opens the configured store for writing, creating and
// migrating it as needed.
func (e *Env) WriteStore() (*store.Store, error) { return WriteStore(e.Cfg) }

// Output is where a command writes: standard output, or the file path
// (mode perm, truncated) when path is neither "" nor "-". Close it when done.
func Output(cmd *cobra.Command, path string, perm os.FileMode) (io.WriteCloser, error) {
	if path == "" || path == "-" {
		return nopCloser{cmd.OutOrStdout()}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// PrintJSON writes v as indented JSON.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ConfigHelp is the paragraph on settings both commands print in --help.
const ConfigHelp = `Settings come from a YAML file (--config, default ` + config.DefaultFile + ` when
present), EGRESS_* environment variables (EGRESS_DB, EGRESS_MODE, ...) and flags,
flags winning. An unknown key or an invalid value is an error that names it.`

// MetricsOn registers cs in a new registry and serves it on addr (see
// ServeMetrics), logging where. With addr "" it serves nothing: reg is
// nil and stop does nothing.
func MetricsOn(log *slog.Logger, addr string, cs ...prometheus.Collector) (reg *prometheus.Registry, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	reg = prometheus.NewRegistry()
	reg.MustRegister(cs...)
	stop, bound, err := ServeMetrics(addr, reg)
	if err != nil {
		return nil, nil, err
	}
	log.Info("serving metrics", "addr", "http://"+bound+"/metrics")
	return reg, stop, nil
}

// Printer returns a function that writes each value to out: as a JSON
// object a line with asJSON, else as the line text gives.
func Printer[T any](out io.Writer, asJSON bool, text func(T) string) func(T) {
	enc := json.NewEncoder(out)
	return func(v T) {
		if asJSON {
			_ = enc.Encode(v)
			return
		}
		fmt.Fprintln(out, text(v))
	}
}

// ServeMetrics serves reg's metrics, and egress_build_info, on addr (port 0 picks one) at /metrics
// until stop is called; bound is the address it listens on.
func ServeMetrics(addr string, reg prometheus.Gatherer) (stop func(), bound string, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, buildinfo.Gatherer()}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, l.Addr().String(), nil
}

// storeWait is how long a command waits for the store's file lock (a
// learner's flush holds it for milliseconds).
const storeWait = 10 * time.Second

// ReadStore opens the configured store for reading.
func ReadStore(cfg *config.Config) (*store.Store, error) {
	return store.Open(cfg.DB, store.Options{LockTimeout: storeWait})
}

// storePageSize is the page size of a store egress-enforce creates: an
// apply --from into a new store writes every flow of the export (1M
// flows: ~57k pages of 4 KiB split, written and synced one by one; 16 KiB
// pages: a quarter of them, the write ~20% cheaper). The learner makes
// its stores itself, with the OS's page size: its flushes change a few
// pages of a large store at a time.
const storePageSize = 16 << 10

// WriteStore opens the configured store for writing, creating and
// migrating it as needed.
func WriteStore(cfg *config.Config) (*store.Store, error) {
	return store.Create(cfg.DB, store.Options{LockTimeout: storeWait, PageSize: storePageSize})
}
