//go:build linux

package nft

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
)

// BenchmarkFullApply times, in a namespace, a full apply (replace and
// read-back) of a plan of 100,000 and 1,000,000 flows, sent by the batch
// writer and by google/nftables, with the process's user and system CPU
// time per apply (the kernel's work is system time of the sendmsg).
func BenchmarkFullApply(b *testing.B) {
	lab.Require(b, "nft")
	for _, size := range []int{100000, 1000000} {
		p := plan.Build(scaleFlows(0, size), scaleOptions(plan.ModeEnforce))
		for _, via := range []string{"batch", "library"} {
			b.Run(strconv.Itoa(size/1000)+"k/"+via, func(b *testing.B) {
				ns := lab.NewNetns(b)
				n := &Netlink{t: Target{Netns: ns.Name}, viaLibrary: via == "library"}
				gen := uint64(0)
				u0, s0 := cpuTimes()
				for b.Loop() {
					gen++
					if _, err := n.ApplyWith(p, ApplyOptions{Generation: gen}); err != nil {
						b.Fatal(err)
					}
				}
				u1, s1 := cpuTimes()
				b.ReportMetric(float64((u1-u0).Milliseconds())/float64(b.N), "user-ms/op")
				b.ReportMetric(float64((s1-s0).Milliseconds())/float64(b.N), "sys-ms/op")
			})
		}
	}
}

// cpuTimes is the process's user and system CPU time so far.
func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}
