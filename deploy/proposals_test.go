package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReconcileProposalsPruned: the daily reconcile writes three files a
// day, each a whole generation's proposal; its ExecStartPre removes the
// proposals older than 90 days, and only proposals. The command is run as
// the unit gives it, on a directory of the test's.
func TestReconcileProposalsPruned(t *testing.T) {
	unit, err := os.ReadFile("systemd/egress-reconcile.service")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(unit), "\n") {
		if rest, ok := strings.CutPrefix(l, "ExecStartPre="); ok && strings.Contains(rest, "/var/lib/egress/proposals") {
			line = rest
		}
	}
	if line == "" {
		t.Fatal("egress-reconcile.service removes no old proposal (no ExecStartPre on /var/lib/egress/proposals)")
	}
	dir := t.TempDir()
	var argv []string
	for _, f := range strings.Fields(line) {
		f = strings.Trim(f, "'")
		argv = append(argv, strings.ReplaceAll(f, "/var/lib/egress/proposals", dir))
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Fatalf("the unit runs %s: %v", argv[0], err)
	}
	now := time.Now()
	files := map[string]time.Duration{
		"2020-01-01.nft": 400 * 24 * time.Hour, "2020-01-01.txt": 400 * 24 * time.Hour, "2020-01-01.json": 400 * 24 * time.Hour,
		"2026-01-01.json": 92 * 24 * time.Hour,
		"2026-11-30.nft":  24 * time.Hour, "2026-11-30.txt": 24 * time.Hour,
		"notes.txt": 400 * 24 * time.Hour, // not a proposal: kept
	}
	for name, age := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	for name, age := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		gone := os.IsNotExist(err)
		if want := age > 90*24*time.Hour && name != "notes.txt"; gone != want {
			t.Errorf("%s (%v old): removed %v, want %v", name, age, gone, want)
		}
	}
}
