package coverage

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// BenchmarkScanFixture: a scan of the fixture host (21 jobs, 2 runs).
func BenchmarkScanFixture(b *testing.B) {
	o := fixOptions(fixtureRoot(b))
	for b.Loop() {
		if _, err := Scan(o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanWorst: a user's crontab at its bound (1000 jobs that never
// ran, so each is searched in every run) against 500 learning runs.
func BenchmarkScanWorst(b *testing.B) {
	root := fixtureRoot(b)
	line := []byte("7 3 * * 1 /bin/weekly-thing\n")
	if err := os.WriteFile(filepath.Join(root, "var/spool/cron/crontabs/carol"), bytes.Repeat(line, maxJobsPerFile), 0o600); err != nil {
		b.Fatal(err)
	}
	o := fixOptions(root)
	o.Runs = nil
	start := mustTime("2026-11-01T00:00:00Z")
	for i := range 500 {
		s := start.Add(time.Duration(i) * time.Hour)
		o.Runs = append(o.Runs, store.Run{ID: uint64(i + 1), Start: s, End: s.Add(30 * time.Minute)})
	}
	for b.Loop() {
		if _, err := Scan(o); err != nil {
			b.Fatal(err)
		}
	}
}
