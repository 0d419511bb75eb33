//go:build linux

package dnspolicy

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkProgramRunTime: the policy program's own time per query in
// the real send path (the kernel's bpf_stats: run time over run count,
// BPF_ENABLE_STATS), while a client floods DP_QUERIES (default 100000)
// allowed queries through it, audit and enforce, and the same for a
// program that returns at once (hook: what the stats' own clock reads
// cost), in DP_ROUNDS rounds (default 3). Other load on the machine moves
// this figure much less than a rate: it is the part of BenchmarkQueryRate's
// cost that the program, not the hook, makes.
func BenchmarkProgramRunTime(b *testing.B) {
	l := newBenchLab(b)
	msg := query("www.example.lab")
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable bpf stats: %v", err)
	}
	defer stats.Close()
	modes := []Mode{hookMode, Audit, Enforce}
	per := map[Mode][]float64{}
	for range envInt("DP_ROUNDS", 3) {
		for _, m := range modes {
			done := l.setMode(b, m)
			prog := l.attachedProgram(b)
			before, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			l.flood(b, msg, envInt("DP_QUERIES", 100000))
			after, err := prog.Stats()
			prog.Close()
			done()
			if err != nil {
				b.Fatal(err)
			}
			runs := after.RunCount - before.RunCount
			if runs == 0 {
				b.Fatalf("%s: the program did not run", m)
			}
			per[m] = append(per[m], float64((after.Runtime-before.Runtime).Nanoseconds())/float64(runs))
		}
	}
	for _, m := range modes {
		b.ReportMetric(median(per[m]), string(m)+"_ns/run")
		b.Logf("%-7s ns a run: %.0f", m, per[m])
	}
}

// attachedProgram is the one egress program attached to the lab's
// cgroup.
func (l *benchLab) attachedProgram(b *testing.B) *ebpf.Program {
	cg, err := os.Open(l.cg.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer cg.Close()
	ids, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: ebpf.AttachCGroupInetEgress})
	if err != nil {
		b.Fatal(err)
	}
	if len(ids.Programs) != 1 {
		b.Fatalf("%d programs attached, want 1", len(ids.Programs))
	}
	prog, err := ebpf.NewProgramFromID(ids.Programs[0].ID)
	if err != nil {
		b.Fatal(err)
	}
	return prog
}
