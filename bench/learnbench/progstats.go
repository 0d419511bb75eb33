//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

// The learner's cost per program (-prog-stats): the kernel's own run time
// and run count of each program attached to the bench's cgroup
// (kernel.bpf_stats_enabled), read at the end of every run, before the
// learner stops. Unlike wall-clock rates it does not depend on what else
// the machine runs. Statistics cost two clock reads per program run, so
// the ratios of a run with -prog-stats are a little lower than without.

const bpfStatsSysctl = "/proc/sys/kernel/bpf_stats_enabled"

// progStat is one program's counters at the end of a run.
type progStat struct {
	Name    string  `json:"name"`
	Attach  string  `json:"attach_type"`
	RunCnt  uint64  `json:"run_cnt"`
	RunNs   uint64  `json:"run_time_ns"`
	NsRun   float64 `json:"ns_per_run"`
	PerUnit float64 `json:"runs_per_unit"` // runs per connect, datagram or MB
}

// enableBPFStats turns kernel.bpf_stats_enabled on and returns what puts
// the previous value back.
func enableBPFStats() (restore func(), err error) {
	old, err := os.ReadFile(bpfStatsSysctl)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bpfStatsSysctl, err)
	}
	if err := os.WriteFile(bpfStatsSysctl, []byte("1\n"), 0o644); err != nil {
		return nil, fmt.Errorf("enable bpf stats: %w", err)
	}
	return func() { _ = os.WriteFile(bpfStatsSysctl, old, 0o644) }, nil
}

// readProgStats reads the counters of the programs attached to cgroup;
// units is what the client did (connects, datagrams, MB).
func readProgStats(cgroup string, units float64) ([]progStat, error) {
	out, err := exec.Command("bpftool", "-j", "cgroup", "show", cgroup).Output()
	if err != nil {
		return nil, fmt.Errorf("bpftool cgroup show: %w", err)
	}
	var attached []struct {
		ID         uint32 `json:"id"`
		AttachType string `json:"attach_type"`
		Name       string `json:"name"`
	}
	if out = bytes.TrimSpace(out); len(out) > 0 {
		if err := json.Unmarshal(out, &attached); err != nil {
			return nil, fmt.Errorf("parse bpftool output: %w", err)
		}
	}
	var stats []progStat
	for _, a := range attached {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(a.ID))
		if err != nil {
			return nil, fmt.Errorf("program %d: %w", a.ID, err)
		}
		ps, err := p.Stats()
		p.Close()
		if err != nil {
			return nil, fmt.Errorf("program %d stats: %w", a.ID, err)
		}
		s := progStat{Name: a.Name, Attach: a.AttachType, RunCnt: ps.RunCount, RunNs: uint64(ps.Runtime.Nanoseconds())}
		if s.Name == "" {
			s.Name = strconv.Itoa(int(a.ID))
		}
		if s.RunCnt > 0 {
			s.NsRun = float64(s.RunNs) / float64(s.RunCnt)
		}
		if units > 0 {
			s.PerUnit = float64(s.RunCnt) / units
		}
		stats = append(stats, s)
	}
	slices.SortFunc(stats, func(a, b progStat) int {
		return strings.Compare(a.Attach+"/"+a.Name, b.Attach+"/"+b.Name)
	})
	return stats, nil
}

// printProgStats prints, per workload and variant, the median over the
// rounds of each program's ns per run, runs per unit, and ns per unit.
func printProgStats(w io.Writer, o *output) {
	type key struct{ workload, variant, attach, name string }
	var order []key
	vals := map[key][][3]float64{}
	for _, r := range o.Runs {
		for _, p := range r.Progs {
			k := key{r.Workload, r.Variant, p.Attach, p.Name}
			if _, ok := vals[k]; !ok {
				order = append(order, k)
			}
			vals[k] = append(vals[k], [3]float64{p.NsRun, p.PerUnit, p.NsRun * p.PerUnit})
		}
	}
	if len(order) == 0 {
		return
	}
	slices.SortStableFunc(order, func(a, b key) int {
		return strings.Compare(a.workload+" "+a.variant, b.workload+" "+b.variant)
	})
	fmt.Fprintln(w, "program run time (kernel.bpf_stats_enabled; medians over the rounds):")
	fmt.Fprintf(w, "  %-13s %-9s %-28s %-22s %9s %10s %10s\n", "workload", "variant", "attach", "program", "ns/run", "runs/unit", "ns/unit")
	for _, k := range order {
		v := vals[k]
		col := func(i int) float64 {
			xs := make([]float64, len(v))
			for j := range v {
				xs[j] = v[j][i]
			}
			return medianOf(xs)
		}
		fmt.Fprintf(w, "  %-13s %-9s %-28s %-22s %9.1f %10.3f %10.1f\n", k.workload, k.variant, k.attach, k.name, col(0), col(1), col(2))
	}
	printProgTotals(w, o)
}

// printProgTotals prints each variant's program time per unit, all
// programs summed (median over the rounds), beside the bare client's CPU
// time per unit: their quotient is the programs' share of the work,
// which other load on the machine hardly moves (the hooks' own cost,
// outside the programs, is not in it).
func printProgTotals(w io.Writer, o *output) {
	type key struct{ workload, variant string }
	var order []key
	totals := map[key][]float64{}
	bareCPU := map[string][]float64{}
	for _, r := range o.Runs {
		if r.Variant == variantBare && r.ClientCPURate > 0 {
			bareCPU[r.Workload] = append(bareCPU[r.Workload], 1e9/r.ClientCPURate)
		}
		if len(r.Progs) == 0 {
			continue
		}
		k := key{r.Workload, r.Variant}
		if _, ok := totals[k]; !ok {
			order = append(order, k)
		}
		var sum float64
		for _, p := range r.Progs {
			sum += p.NsRun * p.PerUnit
		}
		totals[k] = append(totals[k], sum)
	}
	fmt.Fprintf(w, "  %-13s %-9s %14s %18s %8s\n", "workload", "variant", "programs ns/unit", "bare client ns/unit", "share")
	for _, k := range order {
		t := medianOf(totals[k])
		line := fmt.Sprintf("  %-13s %-9s %14.1f", k.workload, k.variant, t)
		if b := bareCPU[k.workload]; len(b) > 0 {
			c := medianOf(b)
			line += fmt.Sprintf(" %18.1f %7.1f%%", c, 100*t/c)
		}
		fmt.Fprintln(w, line)
	}
}

// emptyHooks are the hooks the -empty variant can attach a do-nothing
// program to, by the names -empty-hooks takes; "egress2" is a second
// egress program (the learner's name check before it ran by a tail call
// from the learner's egress program).
var emptyHooks = []struct {
	name   string
	typ    ebpf.ProgramType
	attach ebpf.AttachType
}{
	{"connect4", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
	{"connect6", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect},
	{"sendmsg4", ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Sendmsg},
	{"sendmsg6", ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Sendmsg},
	{"egress", ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
	{"ingress", ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress},
	{"egress2", ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
}

// parseEmptyHooks checks a -empty-hooks list ("all": every hook the
// learner uses, each once).
func parseEmptyHooks(list string) ([]string, error) {
	var names []string
	for _, h := range emptyHooks {
		names = append(names, h.name)
	}
	if list == "" || list == "all" {
		return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "egress2" }), nil
	}
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(names, n) {
			return nil, fmt.Errorf("unknown hook %q in -empty-hooks (known: %s)", n, strings.Join(names, ", "))
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("hook %q twice in -empty-hooks", n)
		}
		out = append(out, n)
	}
	return out, nil
}
