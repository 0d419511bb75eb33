package baseline

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
)

// TestMain runs the tests, or, with MEMO_FRESH=DIR in the environment,
// only one read of the memo in DIR (BenchmarkReadMemoFresh100k's child).
func TestMain(m *testing.M) {
	if dir := os.Getenv("MEMO_FRESH"); dir != "" {
		os.Exit(readMemoFresh(dir))
	}
	os.Exit(m.Run())
}

// readMemoFresh reads the memo in dir once, with the options
// BenchmarkReadMemoFresh100k made it with, and prints the read's wall
// and CPU time and minor page faults.
func readMemoFresh(dir string) int {
	o := memoOptions(plan.FollowBoth, "")
	fp, err := optionsPrint(&o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	m, _, why := readMemo(filepath.Join(dir, "memo"), fp, config.UserNames{}.Name)
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	if m == nil {
		fmt.Fprintln(os.Stderr, why)
		return 1
	}
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	fmt.Printf("%d %d %d\n", wall.Nanoseconds(), cpu, ru1.Minflt-ru0.Minflt)
	return 0
}

// BenchmarkReadMemoFresh100k reads the memo of applybench's 100k-flow
// export once a process, as a delta's apply reads it: the memo's pages
// mapped anew, its arrays in fresh memory, os/user not yet loaded, and
// no collection during the read (GOGC=off: the apply's first collection
// comes after it, memoReadGCAt). It reports the read's wall and CPU time
// and its minor page faults, from the children (the process's start is
// not counted).
func BenchmarkReadMemoFresh100k(b *testing.B) {
	dir := b.TempDir()
	export, memoPath := filepath.Join(dir, "export.json"), filepath.Join(dir, "memo")
	writeMemoExport(b, export, benchFlows(100_000), true)
	o := memoOptions(plan.FollowBoth, "")
	o.UserName = config.UserNames{}.Name
	r, err := ReadExportMemo(export, memoPath, 1, &o, func(string) {})
	if err != nil {
		b.Fatal(err)
	}
	if err := WriteMemo(memoPath, 1, r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, o))); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var wall, cpu, faults int64
	for range b.N {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "MEMO_FRESH="+dir, "GOGC=off")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("a fresh read: %v: %s", err, out)
		}
		var w, c, f int64
		if _, err := fmt.Sscan(string(out), &w, &c, &f); err != nil {
			b.Fatalf("a fresh read said %q: %v", out, err)
		}
		wall, cpu, faults = wall+w, cpu+c, faults+f
	}
	n := float64(b.N)
	b.ReportMetric(float64(wall)/n/1e6, "read-ms/op")
	b.ReportMetric(float64(cpu)/n/1e6, "read-cpu-ms/op")
	b.ReportMetric(float64(faults)/n, "minflt/op")
}
