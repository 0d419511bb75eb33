package store

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchKeys are n flow keys of a few users, as a plan's sets hold them.
func benchKeys(n int) []FlowKey {
	keys := make([]FlowKey, n)
	for i := range keys {
		keys[i] = FlowKey{UID: uint32(1000 + i*4/n), Proto: 6, IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 443}
	}
	return keys
}

// BenchmarkApprovalsNewStore times the write that records a generation
// with the approvals of n flows a new store does not have (the first
// apply --from of an export).
func BenchmarkApprovalsNewStore(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchNewStore(b, n) })
	}
}

func benchNewStore(b *testing.B, n int) {
	keys := benchKeys(n)
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := Create(filepath.Join(b.TempDir(), "s.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		g, err := s.AddGeneration(Generation{State: GenApplying}, nil)
		if err != nil {
			b.Fatal(err)
		}
		a := NewApprovals(keys, func(f *Flow) { f.Approved, f.ApprovedAt, f.ApprovedNames = g.N, at, f.Hostnames })
		b.StartTimer()
		before := cpuTime()
		if _, err := s.UpdateGenerationPlanApproving(g.N, []byte("plan"), func(g *Generation) error { g.State = GenApplied; return nil }, a); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - before
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkApprovalsDelta times the write that records a delta apply's
// generation: a plan of 100,000 flows approved before, 100 of them new.
func BenchmarkApprovalsDelta(b *testing.B) {
	const n, change = 100_000, 100
	keys := benchKeys(n + change*(b.N+1))
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s, err := Create(filepath.Join(b.TempDir(), "s.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	approve := func(n uint64) func(f *Flow) {
		return func(f *Flow) { f.Approved, f.ApprovedAt, f.ApprovedNames = n, at, f.Hostnames }
	}
	var cpu time.Duration
	for i := -1; i < b.N; i++ {
		b.StopTimer()
		g, err := s.AddGeneration(Generation{State: GenApplying}, nil)
		if err != nil {
			b.Fatal(err)
		}
		a := NewApprovals(keys[(i+1)*change:n+(i+1)*change], approve(g.N))
		if i >= 0 {
			b.StartTimer()
		}
		before := cpuTime()
		if _, err := s.UpdateGenerationPlanApproving(g.N, nil, markApplied, a); err != nil {
			b.Fatal(err)
		}
		if i >= 0 {
			cpu += cpuTime() - before
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func markApplied(g *Generation) error { g.State = GenApplied; return nil }
