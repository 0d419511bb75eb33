//go:build linux

package dnspolicy

import (
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/follow"
)

// Benchmark modes with the DNS follower's egress program on the hook.
const (
	followerMode Mode = "follower"         // the follower's program alone, its slot empty
	followerEnf  Mode = "follower+enforce" // the follower's program, the policy in its slot
	// followerBefore is the egress program of another build of the
	// follower (DP_FOLLOW_BEFORE: its bpf2go object, e.g. main's
	// bpf/follow_bpfel.o): what the empty slot's tail call costs a host
	// with a follower and no policy.
	followerBefore Mode = "follower_before"
)

// BenchmarkQueryRateFollowerAlternating is BenchmarkQueryRateAlternating
// with the follower's configuration beside the standalone one. Blocks of
// DP_BLOCK queries (default 5000) from one client, the egress hook
// changing between blocks: none (off), the policy in enforce as its own
// program (enforce), the follower's egress program alone (follower), the
// follower's program with the policy in its slot (follower+enforce);
// DP_ALT_ROUNDS rounds (default 200), the order turning every round. The
// issue's goal, enforce against off, is then enforce/off on a host without
// a follower and follower+enforce/follower on a host with one: the
// medians of the rounds' paired CPU-time ratios (*_cpu_paired). With
// DP_FOLLOW_BEFORE, a fifth mode: another build's follower program.
func BenchmarkQueryRateFollowerAlternating(b *testing.B) {
	l := newBenchLab(b)
	progs := l.loadModes(b)
	fobjs := loadFollowerForRun(b, l.cfg.Target)
	fol, slot := fobjs.FollowEgress, fobjs.DnsPolicySlot
	msg := query("www.example.lab")
	c := l.startBlocks(b, msg, envInt("DP_BLOCK", 5000))
	modes := []Mode{Off, Enforce, followerMode, followerEnf}
	hook := map[Mode]*ebpf.Program{Off: nil, Enforce: progs[Enforce], followerMode: fol, followerEnf: fol}
	before := os.Getenv("DP_FOLLOW_BEFORE")
	if before != "" {
		modes = append(modes, followerBefore)
		hook[followerBefore] = loadFollowerEgressFrom(b, before, l.cfg.Target)
	}
	cpus, rates := map[Mode][]float64{}, map[Mode][]float64{}
	pairs := map[string][]float64{}
	pair := func(name string, num, den Mode, round int) {
		pairs[name+"_cpu_paired"] = append(pairs[name+"_cpu_paired"], cpus[den][round]/cpus[num][round])
		pairs[name+"_paired"] = append(pairs[name+"_paired"], rates[num][round]/rates[den][round])
	}
	for round := range envInt("DP_ALT_ROUNDS", 200) {
		for _, m := range roundOrder(modes, round) {
			var err error
			if m == followerEnf {
				err = follow.FillSlot(slot, progs[Enforce])
			} else {
				err = follow.ClearSlot(slot)
			}
			if err != nil {
				b.Fatal(err)
			}
			r, cpu := c.block(b, l, hook[m])
			rates[m], cpus[m] = append(rates[m], r), append(cpus[m], cpu)
		}
		pair("enforce/off", Enforce, Off, round)
		pair("follower+enforce/follower", followerEnf, followerMode, round)
		pair("follower/off", followerMode, Off, round)
		pair("follower+enforce/off", followerEnf, Off, round)
		if before != "" {
			pair("follower/follower_before", followerMode, followerBefore, round)
		}
	}
	for name, v := range pairs {
		b.ReportMetric(median(v), name)
	}
	for _, m := range modes {
		b.ReportMetric(median(cpus[m]), string(m)+"_cpu_us/query")
		b.Logf("%-16s queries/s median %.0f p90 %.0f, CPU us/query median %.3f p10 %.3f", m,
			median(rates[m]), quantile(rates[m], 0.9), median(cpus[m]), quantile(cpus[m], 0.1))
	}
	b.ReportMetric(quantile(cpus[Off], 0.1)/quantile(cpus[Enforce], 0.1), "enforce/off_cpu_p10")
	b.ReportMetric(quantile(cpus[followerMode], 0.1)/quantile(cpus[followerEnf], 0.1), "follower+enforce/follower_cpu_p10")
}

// roundOrder is the order of the modes in a round: turned by one each
// round, and reversed every other turn.
func roundOrder(modes []Mode, round int) []Mode {
	order := slices.Clone(modes)
	rot := round % len(order)
	order = append(order[rot:], order[:rot]...)
	if round/len(order)%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// loadFollowerEgressFrom loads the follower egress program of the bpf2go
// object at path for the target's namespace.
func loadFollowerEgressFrom(b *testing.B, path string, target nft.Target) *ebpf.Program {
	cookie, err := netnsCookie(target)
	if err != nil {
		b.Fatal(err)
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables["netns_cookie"].Set(cookie); err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(coll.Close)
	return coll.Programs["follow_egress"]
}
