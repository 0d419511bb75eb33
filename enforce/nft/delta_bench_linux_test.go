//go:build linux

package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// scaleFlows are n distinct flows (a tenth IPv6) starting at index from,
// with comments as a learner would store them.
func scaleFlows(from, n int) []store.Flow {
	out := make([]store.Flow, 0, n)
	for i := from; i < from+n; i++ {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if i%10 == 0 {
			ip = fmt.Sprintf("2001:db8::%x:%x", i>>16, i&0xffff)
		}
		out = append(out, plantest.Flow(uint32(1000+i%40), plan.ProtoTCP, ip, 443, uint64(i%97+1), plantest.T0, fmt.Sprintf("h%d.example", i)))
	}
	return out
}

func scaleOptions(mode plan.Mode) plan.Options {
	return plan.Options{Mode: mode, Now: plantest.T0, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}
}

// BenchmarkDeltaVsFull100k times, in a namespace, a full apply of a
// 100,000-flow plan and a delta apply of the same plan with 100 flows
// removed and 100 added (engine only: no store, no CLI), and a dump of
// the elements.
func BenchmarkDeltaVsFull100k(b *testing.B) {
	lab.Require(b, "nft")
	ns := lab.NewNetns(b)
	n := Open(Target{Netns: ns.Name})
	flows := scaleFlows(0, 100000)
	from := plan.Build(flows, scaleOptions(plan.ModeEnforce))
	to := plan.Build(append(flows[100:len(flows):len(flows)], scaleFlows(200000, 100)...), scaleOptions(plan.ModeEnforce))
	fromIdx, toIdx := plan.IndexOf(from), plan.IndexOf(to)
	gen := uint64(0)
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			gen++
			if _, err := n.ApplyWith(from, ApplyOptions{Generation: gen}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("delta", func(b *testing.B) {
		var took time.Duration
		for b.Loop() {
			b.StopTimer()
			gen++
			if _, err := n.ApplyWith(from, ApplyOptions{Generation: gen}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t0 := time.Now()
			res, err := n.ApplyWith(to, ApplyOptions{Generation: gen + 1, From: fromIdx, FromGeneration: gen})
			took += time.Since(t0)
			gen++
			if err != nil || res.Delta == nil {
				b.Fatal(err, res.FullReason)
			}
		}
		_ = toIdx
	})
	b.Run("dump", func(b *testing.B) {
		for b.Loop() {
			if _, err := n.Status(from.Table, true); err != nil {
				b.Fatal(err)
			}
		}
	})
}
