//go:build linux

package main

import (
	"fmt"
	"slices"
)

// spread is min, median and max.
func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("%.1f / %.1f / %.1f", s[0], s[len(s)/2], s[len(s)-1])
}

func report(r *results) {
	fmt.Printf("monitorbench: kernel %s, %d CPUs (shared machine: figures are min / median / max over rounds)\n\n", r.Kernel, r.CPUs)
	for _, rate := range []uint32{unlimited, 100} {
		var peak, final, p50, pmax, i50, imax, stall, secs, recv, errs []float64
		var n int
		for _, f := range r.Floods {
			if f.DropLogRate != rate {
				continue
			}
			n++
			peak, final = append(peak, f.PeakRSSMiB), append(final, f.FinalRSSMiB)
			p50, pmax = append(p50, f.ScrapeP50ms), append(pmax, f.ScrapeMaxMs)
			i50, imax, stall = append(i50, f.IdleP50ms), append(imax, f.IdleMaxMs), append(stall, f.StallMaxMs)
			secs, recv, errs = append(secs, f.FloodSeconds), append(recv, f.LogEntries), append(errs, float64(f.ScrapeErrors))
		}
		if n == 0 {
			continue
		}
		what := fmt.Sprintf("drop_log_rate %d/s", rate)
		if rate == unlimited {
			what = "every drop logged"
		}
		fmt.Printf("flood of 1,048,560 distinct denied destinations, %s (%d rounds):\n", what, n)
		fmt.Printf("  flood duration s        %s\n", spread(secs))
		fmt.Printf("  watch peak RSS MiB      %s   (goal <= 64)\n", spread(peak))
		fmt.Printf("  watch RSS after MiB     %s\n", spread(final))
		fmt.Printf("  /metrics p50 ms         %s\n", spread(p50))
		fmt.Printf("  /metrics max ms         %s   (goal < 200)\n", spread(pmax))
		fmt.Printf("  /metrics idle p50 ms    %s   (the 5 s before the flood)\n", spread(i50))
		fmt.Printf("  /metrics idle max ms    %s\n", spread(imax))
		fmt.Printf("  bench's worst stall ms  %s   (a 5 ms sleep's lateness during the flood: the machine's share)\n", spread(stall))
		fmt.Printf("  scrape failures         %s\n", spread(errs))
		fmt.Printf("  logs received           %s\n", spread(recv))
		last := r.Floods[len(r.Floods)-1]
		for _, f := range r.Floods {
			if f.DropLogRate == rate {
				last = f
			}
		}
		fmt.Printf("  last round: kernel dropped %.0f of %d sent, unlogged %.0f, received %.0f, lost on the socket %.0f (%.0f errors), unrecorded %.0f,\n",
			last.KernelDropped, last.Sent, last.Unlogged, last.LogEntries, last.LostLogs, last.ReceiveErrors, last.Unrecorded)
		fmt.Printf("              top entries %.0f, store %d observations (%.1f MiB)\n\n", last.TopEntries, last.Observations, last.StoreMiB)
	}
	for _, s := range r.Soaks {
		how := "pruned daily (retention 90d, keep_generations 50)"
		if !s.Pruned {
			how = "never pruned"
		}
		fmt.Printf("store soak, %s, %d days:\n  file MiB by day:  ", how, s.Days)
		for d := 30; d <= s.Days; d += 30 {
			fmt.Printf(" %d: %.1f", d, s.FileMiB[d])
		}
		fmt.Printf("\n  in use MiB by day:")
		for d := 30; d <= s.Days; d += 30 {
			fmt.Printf(" %d: %.1f", d, s.InUseMiB[d])
		}
		fmt.Printf("\n  records at the end: %v\n", s.Records)
		if len(s.PruneMillis) > 0 {
			fmt.Printf("  daily prune ms: %s\n", spread(s.PruneMillis))
		}
		fmt.Println()
	}
}
