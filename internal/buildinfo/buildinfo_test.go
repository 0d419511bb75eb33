package buildinfo

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spf13/cobra"
)

func newTree() *cobra.Command {
	root := &cobra.Command{Use: "egress-x", Short: "A tool"}
	root.PersistentFlags().String("now", "", "hidden")
	_ = root.PersistentFlags().MarkHidden("now")
	root.AddCommand(&cobra.Command{Use: "run", Short: "Run it", Long: "run runs it.", RunE: func(*cobra.Command, []string) error { return nil }})
	Attach(root)
	return root
}

func execute(t *testing.T, root *cobra.Command, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// TestVersion: --version prints the version and commit set at build.
func TestVersion(t *testing.T) {
	Version, Commit = "1.2.3", "abcdef012345"
	defer func() { Version, Commit = "", "" }()
	out := execute(t, newTree(), "--version")
	if !strings.HasPrefix(out, "egress-x 1.2.3 (commit abcdef012345, go") {
		t.Errorf("--version: %q", out)
	}
}

// TestVersionUnset: without -X, a test binary has no module version nor
// VCS stamp: "unknown", never an empty field.
func TestVersionUnset(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Commit == "" || !strings.HasPrefix(i.Go, "go") {
		t.Errorf("%+v", i)
	}
}

// TestGenMan: gen-man writes a section 8 page per command, dated by
// SOURCE_DATE_EPOCH, with the version, without hidden flags or commands.
func TestGenMan(t *testing.T) {
	Version = "1.2.3"
	defer func() { Version = "" }()
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600") // 2026-01-01
	dir := t.TempDir()
	execute(t, newTree(), "gen-man", dir)
	for _, name := range []string{"egress-x.8", "egress-x-run.8"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		page := string(data)
		if !strings.Contains(page, `.TH "`+strings.ToUpper(strings.TrimSuffix(name, ".8"))+`" "8" "Jan 2026" "egress 1.2.3" "System Administration"`) {
			t.Errorf("%s header:\n%.300s", name, page)
		}
		if strings.Contains(page, "now") || strings.Contains(page, "gen-man") {
			t.Errorf("%s shows a hidden flag or command:\n%s", name, page)
		}
	}
	if root, _ := os.ReadFile(filepath.Join(dir, "egress-x.8")); !strings.Contains(string(root), "version") {
		t.Errorf("the root page does not document --version:\n%s", root)
	}
	if _, err := os.Stat(filepath.Join(dir, "egress-x-gen-man.8")); err == nil {
		t.Error("a page for the hidden gen-man command")
	}
}

// TestMetric: egress_build_info carries the version and commit.
func TestMetric(t *testing.T) {
	Version, Commit = "1.2.3", "abc"
	defer func() { Version, Commit = "", "" }()
	want := `# HELP egress_build_info 1, labelled with the version and commit the serving binary was built from.
# TYPE egress_build_info gauge
`
	n, err := testutil.GatherAndCount(Gatherer(), "egress_build_info")
	if err != nil || n != 1 {
		t.Fatalf("%d %v", n, err)
	}
	if err := testutil.CollectAndCompare(Metric("egress-enforce"), strings.NewReader(want+
		`egress_build_info{commit="abc",goversion="`+Get().Go+`",tool="egress-enforce",version="1.2.3"} 1
`)); err != nil {
		t.Error(err)
	}
}

func TestManVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3":                                    "1.2.3",
		"0.0.0+git20261130112423.6e742ac":          "0.0.0+6e742ac",
		"1.2.3+git20261130112423.6e742ac.dirty":    "1.2.3+6e742ac.dirty",
		"v0.0.0-20261130112423-6e742acffda3+dirty": "v0.0.0-20261130112423-6e742acffda3+dirty",
	} {
		if got := manVersion(in); got != want {
			t.Errorf("manVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
