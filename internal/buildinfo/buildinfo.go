// Package buildinfo holds the version and commit a binary was built from
// (set by the Makefile with -ldflags -X), gives both commands --version,
// the egress_build_info metric, and the hidden "gen-man" command the
// packaging generates the man pages with.
package buildinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Set at build: go build -ldflags "-X github.com/egresskit/egress/internal/buildinfo.Version=1.2.3 -X ...Commit=abc".
// Empty, they come from what the Go toolchain stamped in the binary.
var (
	Version string
	Commit  string
)

// Info is what a binary knows of its build.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
}

// Get returns the build's version and commit: the linker's values, else the
// main module's version and the VCS revision Go stamped, else "unknown".
func Get() Info {
	i := Info{Version: Version, Commit: Commit, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if i.Version == "" && ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		i.Version = bi.Main.Version
	}
	if i.Commit == "" && ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && modified == "true" {
			rev += "-dirty"
		}
		i.Commit = rev
	}
	if i.Version == "" {
		i.Version = "unknown"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	return i
}

// String is the --version line after the command's name.
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s %s/%s)", i.Version, i.Commit, i.Go, runtime.GOOS, runtime.GOARCH)
}

// Attach gives root --version and the hidden gen-man command.
func Attach(root *cobra.Command) {
	root.Version = Get().String()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.AddCommand(genMan(root))
}

// Metric is egress_build_info for the command named tool, for a metrics
// endpoint.
func Metric(tool string) prometheus.Collector {
	i := Get()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "egress_build_info",
		Help:        "1, labelled with the version and commit the serving binary was built from.",
		ConstLabels: prometheus.Labels{"tool": tool, "version": i.Version, "commit": i.Commit, "goversion": i.Go},
	}, func() float64 { return 1 })
}

// Gatherer serves egress_build_info of the running binary.
func Gatherer() prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Metric(filepath.Base(os.Args[0])))
	return reg
}

// snapshotTime is the commit time deploy/version.sh puts in a snapshot's
// version, for ordering.
var snapshotTime = regexp.MustCompile(`git[0-9]{14}\.`)

// manVersion is the version for a page's footer, where a long one runs
// into the date: without a snapshot's commit time (0.0.0+6e742ac).
func manVersion(v string) string {
	return snapshotTime.ReplaceAllString(v, "")
}

// genMan writes the man pages of root and every subcommand, section 8.
func genMan(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages (section 8) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("create %s: %w", args[0], err)
			}
			// The pages' date is SOURCE_DATE_EPOCH's when set (cobra/doc
			// reads it: reproducible pages), else today.
			root.DisableAutoGenTag = true
			root.InitDefaultVersionFlag()
			hdr := &doc.GenManHeader{Section: "8", Source: "egress " + manVersion(Get().Version), Manual: "System Administration"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("write man pages: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the man pages of %s into %s\n", strings.TrimSpace(root.Name()), args[0])
			return nil
		},
	}
}
