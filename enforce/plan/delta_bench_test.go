package plan_test

import (
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// BenchmarkDelta100k times what a delta apply of a 100,000-flow plan
// costs besides the kernel: indexing the new plan, the delta, the patch.
func BenchmarkDelta100k(b *testing.B) {
	flows := deltaFlows(100000)
	from := plan.Build(flows, deltaOptions(plan.ModeAudit))
	to := plan.Build(changed(flows, 100, 100), deltaOptions(plan.ModeAudit))
	fromIdx := plan.IndexOf(from)
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			plan.Build(flows, deltaOptions(plan.ModeAudit))
		}
	})
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			plan.IndexOf(to)
		}
	})
	b.Run("delta", func(b *testing.B) {
		for b.Loop() {
			if _, err := plan.NewDelta(fromIdx, to); err != nil {
				b.Fatal(err)
			}
		}
	})
	toIdx := plan.IndexOf(to)
	d, _ := plan.NewDelta(fromIdx, to)
	b.Run("patch", func(b *testing.B) {
		for b.Loop() {
			plan.MakePatch(1, fromIdx, to, toIdx, d)
		}
	})
	b.Run("encode-index", func(b *testing.B) {
		for b.Loop() {
			toIdx.Encode()
		}
	})
}
