package baseline

import (
	"fmt"
	"syscall"
	"testing"
)

// BenchmarkReadExportWhole100k reads a 100,000-flow export whole (no
// memo: a full apply's read), with users named, and reports the CPU time
// of a read beside its wall time (the whole read runs on two cores).
func BenchmarkReadExportWhole100k(b *testing.B) {
	_, next, _, o := memoBench100k(b)
	o.UserName = func(uid uint32) string { return fmt.Sprint("u", uid) }
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		oo := o
		r, err := ReadExportMemo(next, "", 0, &oo, func(string) {})
		if err != nil || r.Reason == "" {
			b.Fatal(err, r.Reason)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
}

// cpuTime is the process's user and system time so far, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
