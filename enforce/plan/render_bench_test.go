package plan_test

import (
	"io"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// BenchmarkRender100k times the whole plan's renderings a replace makes
// beside the kernel (less the packing and the files): its JSON in pieces
// and its script, of a 100,000-flow plan.
func BenchmarkRender100k(b *testing.B) {
	p := plan.Build(deltaFlows(100000), deltaOptions(plan.ModeAudit))
	buf := make([]byte, 0, 320<<10)
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			if err := p.JSONPieces(256<<10, func([]byte) []byte { return buf }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("text", func(b *testing.B) {
		for b.Loop() {
			if err := p.WriteText(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
}
