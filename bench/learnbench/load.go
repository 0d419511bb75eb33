//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bench/internal/benchutil"
)

// A workload is one kind of traffic the learner's cost is measured on: a
// client in the bench's cgroup and namespace, and a server in the namespace
// outside the cgroup.
type workload struct {
	Name string
	Desc string
	Unit string // of the rate: conn/s, pkt/s, MB/s
	// Flows is how many flows a learner must store (0: not checked);
	// ExactHits: the stored hits must equal the client's attempts.
	Flows     int
	ExactHits bool
	// BothCPU: the rate per CPU-second counts the client's and the
	// server's CPU time (tcp-bulk).
	BothCPU bool
	run     func(b *bench, d time.Duration) (loadResult, error)
}

// loadResult is what a client did.
type loadResult struct {
	Units    float64 // connects, datagrams or megabytes
	Attempts uint64  // attempts the learner must count (ExactHits)
	Errors   uint64
	FirstErr string
	Seconds  float64
	CPU      float64 // the client's user+sys seconds
	// ServerCPU is the receiving server's CPU seconds (tcp-bulk: on
	// loopback the receive path runs partly in the sender's context and
	// partly in the receiver's, and how it splits varies from run to run).
	ServerCPU float64
}

// workloads are the cases learnbench knows, in the order they run.
func workloads() []workload {
	return []workload{
		{Name: "storm2", Desc: "TCP connect storm, 2 threads", Unit: "conn/s", Flows: 1, ExactHits: true,
			run: func(b *bench, d time.Duration) (loadResult, error) { return b.runStorm(d, 2) }},
		{Name: "storm1", Desc: "TCP connect storm, 1 thread", Unit: "conn/s", Flows: 1, ExactHits: true,
			run: func(b *bench, d time.Duration) (loadResult, error) { return b.runStorm(d, 1) }},
		{Name: "udp64", Desc: "64-byte UDP, connected socket (iperf3 -u -b 0 -l 64)", Unit: "pkt/s",
			run: func(b *bench, d time.Duration) (loadResult, error) { return b.runIperf(d, "-u", "-b", "0", "-l", "64") }},
		{Name: "udp64-sendto", Desc: "64-byte UDP, unconnected sendto() to one destination", Unit: "pkt/s", Flows: 1, ExactHits: true,
			run: func(b *bench, d time.Duration) (loadResult, error) { return b.runSendto(d) }},
		{Name: "tcp-bulk", Desc: "bulk TCP (iperf3, 128 KiB writes; CPU: client and server)", Unit: "MB/s", BothCPU: true,
			run: func(b *bench, d time.Duration) (loadResult, error) { return b.runIperf(d) }},
	}
}

// loadRun is one run of a workload with one variant.
type loadRun struct {
	Workload string  `json:"workload"`
	Variant  string  `json:"variant"`
	Round    int     `json:"round"`
	Rate     float64 `json:"rate"`             // units per second of wall clock
	CPURate  float64 `json:"rate_per_cpu_sec"` // units per second of the client's CPU time (tcp-bulk: client and server)
	// ClientCPURate is units per second of the client's CPU time alone.
	ClientCPURate float64     `json:"rate_per_client_cpu_sec"`
	ServerCPU     float64     `json:"server_cpu_seconds,omitempty"`
	Attempts      uint64      `json:"attempts,omitempty"`
	Errors        uint64      `json:"errors"`
	FirstErr      string      `json:"first_error,omitempty"`
	Seconds       float64     `json:"seconds"`
	ClientCPU     float64     `json:"client_cpu_seconds"`
	Learner       *learnerRun `json:"learner,omitempty"`
	Progs         []progStat  `json:"programs,omitempty"` // -prog-stats
}

// loadSummary sums up one workload and variant over the rounds.
type loadSummary struct {
	Workload string  `json:"workload"`
	Variant  string  `json:"variant"`
	Unit     string  `json:"unit"`
	Runs     int     `json:"runs"`
	Median   float64 `json:"median_rate"`
	MinRate  float64 `json:"min_rate"`
	MaxRate  float64 `json:"max_rate"`
	// Ratio is the median rate over the bare median; Paired the median of
	// the per-round ratios (learner and bare of a round run back to back),
	// PairedMin and PairedMax their spread; CPURatio compares the client's
	// work per CPU second (medians), which other load disturbs less.
	Ratio     float64 `json:"ratio,omitempty"`
	Paired    float64 `json:"paired_ratio,omitempty"`
	PairedMin float64 `json:"paired_min,omitempty"`
	PairedMax float64 `json:"paired_max,omitempty"`
	CPURatio  float64 `json:"cpu_ratio,omitempty"`
	// PairedCPU is the median of the per-round ratios of the CPU rates
	// (PairedCPUMin, PairedCPUMax their spread); OverEmpty the same
	// against the -empty variant of the round (what the programs add
	// above do-nothing programs on the same hooks).
	PairedCPU    float64 `json:"paired_cpu_ratio,omitempty"`
	PairedCPUMin float64 `json:"paired_cpu_min,omitempty"`
	PairedCPUMax float64 `json:"paired_cpu_max,omitempty"`
	OverEmpty    float64 `json:"cpu_over_empty,omitempty"`
	// OverCompare is the median of the per-round ratios of the CPU rates
	// against the -compare variant (OverCompareMin, OverCompareMax their
	// spread): this tree's learner against another build, same rounds.
	OverCompare    float64 `json:"cpu_over_compare,omitempty"`
	OverCompareMin float64 `json:"cpu_over_compare_min,omitempty"`
	OverCompareMax float64 `json:"cpu_over_compare_max,omitempty"`
	// PairedClientCPU is PairedCPU with the client's CPU time alone, for
	// a workload whose CPU rate also counts the server's (tcp-bulk).
	PairedClientCPU    float64 `json:"paired_client_cpu_ratio,omitempty"`
	PairedClientCPUMin float64 `json:"paired_client_cpu_min,omitempty"`
	PairedClientCPUMax float64 `json:"paired_client_cpu_max,omitempty"`
	Attempts           uint64  `json:"attempts"`
	Hits               uint64  `json:"hits"`
	Lost               uint64  `json:"lost"`
	DNSLost            uint64  `json:"dns_lost"`
	LearnerCPUPct      float64 `json:"learner_cpu_percent,omitempty"`
}

// loads runs the chosen workloads, rounds times, each round running every
// workload with every variant back to back (bare first in odd rounds,
// last in even ones).
func (b *bench) loads(cl *benchutil.Cleaner, o runOptions, res *output) error {
	if err := b.startServers(cl, o.acceptors); err != nil {
		return err
	}
	if o.warmup > 0 {
		if _, err := b.runStorm(o.warmup, 2); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, w := range o.loads {
			variants := []string{variantBare, variantLearner}
			if slices.Contains(o.perEvent, w.Name) {
				variants = append(variants, variantPerEvent)
			}
			if b.compare != "" {
				variants = append(variants, variantCompare)
			}
			if b.udpEgress {
				variants = append(variants, variantUDPEgress)
			}
			if b.empty {
				variants = append(variants, variantEmpty)
			}
			if round%2 == 0 {
				slices.Reverse(variants)
			}
			for _, v := range variants {
				if err := b.ctx.Err(); err != nil {
					return err
				}
				run, err := b.loadRun(w, v, round, o.duration)
				if run != nil {
					res.Runs = append(res.Runs, *run)
				}
				if err != nil {
					return fmt.Errorf("round %d %s %s: %w", round, w.Name, v, err)
				}
			}
		}
	}
	res.Summary = summarizeLoads(res.Runs, o.loads)
	return nil
}

// loadRun runs workload w once with variant v.
func (b *bench) loadRun(w workload, v string, round int, d time.Duration) (*loadRun, error) {
	var l *learnerProc
	var err error
	var stopEmpty func() error
	switch v {
	case variantEmpty:
		stopEmpty, err = b.startEmpty()
	case variantLearner:
		l, err = b.startLearner(learnerBinary, fmt.Sprintf("%s-r%d-learner", w.Name, round))
	case variantPerEvent:
		l, err = b.startLearner(learnerPerEvent, fmt.Sprintf("%s-r%d-per-event", w.Name, round))
	case variantCompare:
		l, err = b.startLearner(learnerCompare, fmt.Sprintf("%s-r%d-compare", w.Name, round))
	case variantUDPEgress:
		l, err = b.startLearner(learnerUDPEgress, fmt.Sprintf("%s-r%d-udpegress", w.Name, round))
	}
	if err != nil {
		return nil, err
	}
	r, err := w.run(b, d)
	var progs []progStat
	if err == nil && b.progStats && v != variantBare {
		progs, err = readProgStats(b.cgroup, r.Units)
	}
	if stopEmpty != nil {
		if serr := stopEmpty(); serr != nil && err == nil {
			err = fmt.Errorf("empty programs: %w", serr)
		}
	}
	if err != nil {
		if l != nil {
			_, _ = b.stopLearner(l, false)
		}
		return nil, err
	}
	run := &loadRun{Workload: w.Name, Variant: v, Round: round, Rate: r.Units / r.Seconds, Attempts: r.Attempts,
		Errors: r.Errors, FirstErr: r.FirstErr, Seconds: r.Seconds, ClientCPU: r.CPU, ServerCPU: r.ServerCPU, Progs: progs}
	if r.CPU > 0 {
		run.CPURate = r.Units / r.CPU
		run.ClientCPURate = run.CPURate
	}
	if w.BothCPU && r.CPU+r.ServerCPU > 0 {
		run.CPURate = r.Units / (r.CPU + r.ServerCPU)
	}
	if r.Errors > 0 {
		b.note("round %d %s %s: %d errors (first: %s)", round, w.Name, v, r.Errors, r.FirstErr)
	}
	if l != nil {
		time.Sleep(b.stopDelay)
		lr, err := b.stopLearner(l, (v == variantLearner || v == variantCompare || v == variantUDPEgress) && w.ExactHits)
		run.Learner = lr
		if err != nil {
			return run, err
		}
		b.checkLearner(w, run)
	}
	benchutil.Logf("round %d %-12s %-9s %10.0f %s  (%.0f per cpu-s, client cpu %.3fs, server cpu %.3fs)%s",
		round, w.Name, v, run.Rate, w.Unit, run.CPURate, r.CPU, r.ServerCPU, learnerLine(run.Learner))
	return run, nil
}

func learnerLine(l *learnerRun) string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf(" flows %d hits %d, lost %d, dns lost %d, learner cpu %.2fs, exit %d",
		l.Flows, l.Hits, l.LostEvents, l.DNSLost, l.CPUSeconds, l.ExitCode)
}

// checkLearner notes what a learner got wrong: hits that differ from the
// attempts, lost events, a run not finished.
func (b *bench) checkLearner(w workload, run *loadRun) {
	lr, at := run.Learner, fmt.Sprintf("round %d %s %s", run.Round, w.Name, run.Variant)
	if w.ExactHits && lr.Hits != run.Attempts {
		b.note("%s: %d hits recorded but the client made %d attempts (%+d)", at, lr.Hits, run.Attempts, int64(lr.Hits)-int64(run.Attempts))
	}
	if lr.ReportHits >= 0 && uint64(lr.ReportHits) != lr.Hits {
		b.note("%s: report --json sums %d hits, the store %d", at, lr.ReportHits, lr.Hits)
	}
	if lr.RunEvents != lr.Hits {
		b.note("%s: run record counts %d events, the flows %d hits", at, lr.RunEvents, lr.Hits)
	}
	if lr.LostEvents > 0 || lr.DNSLost > 0 {
		b.note("%s: lost %d events, %d DNS answers", at, lr.LostEvents, lr.DNSLost)
	}
	if w.Flows > 0 && lr.Flows != w.Flows {
		b.note("%s: %d flows stored, want %d", at, lr.Flows, w.Flows)
	}
	if !lr.Finished {
		b.note("%s: run not marked finished", at)
	}
}

// summarizeLoads computes each workload's medians and ratios.
func summarizeLoads(runs []loadRun, loads []workload) []loadSummary {
	var out []loadSummary
	for _, w := range loads {
		bare := pick(runs, w.Name, variantBare)
		empty := pick(runs, w.Name, variantEmpty)
		compare := pick(runs, w.Name, variantCompare)
		for _, v := range []string{variantBare, variantLearner, variantUDPEgress, variantCompare, variantPerEvent, variantEmpty} {
			rs := pick(runs, w.Name, v)
			if len(rs) == 0 {
				continue
			}
			s := loadSummary{Workload: w.Name, Variant: v, Unit: w.Unit, Runs: len(rs)}
			rates := field(rs, func(r loadRun) float64 { return r.Rate })
			s.Median, s.MinRate, s.MaxRate = medianOf(rates), slices.Min(rates), slices.Max(rates)
			if v != variantBare && len(bare) > 0 {
				s.Ratio = s.Median / medianOf(field(bare, func(r loadRun) float64 { return r.Rate }))
				s.CPURatio = medianOf(field(rs, func(r loadRun) float64 { return r.CPURate })) /
					medianOf(field(bare, func(r loadRun) float64 { return r.CPURate }))
				s.paired(rs, bare)
				cpuRate := func(r loadRun) float64 { return r.CPURate }
				s.PairedCPU, s.PairedCPUMin, s.PairedCPUMax = pairedRatios(rs, bare, cpuRate)
				if v != variantEmpty {
					s.OverEmpty, _, _ = pairedRatios(rs, empty, cpuRate)
				}
				if v == variantLearner {
					s.OverCompare, s.OverCompareMin, s.OverCompareMax = pairedRatios(rs, compare, cpuRate)
				}
				if w.BothCPU {
					s.PairedClientCPU, s.PairedClientCPUMin, s.PairedClientCPUMax = pairedRatios(rs, bare,
						func(r loadRun) float64 { return r.ClientCPURate })
				}
			}
			s.addLearners(rs)
			out = append(out, s)
		}
	}
	return out
}

// paired computes the per-round ratios of rs to the bare runs of the same
// round.
func (s *loadSummary) paired(rs, bare []loadRun) {
	s.Paired, s.PairedMin, s.PairedMax = pairedRatios(rs, bare, func(r loadRun) float64 { return r.Rate })
}

// pairedRatios is the median, minimum and maximum of f(r) / f(b) over
// the runs r of rs and b of base of the same round (zeros when none).
func pairedRatios(rs, base []loadRun, f func(loadRun) float64) (med, lo, hi float64) {
	var ratios []float64
	for _, r := range rs {
		for _, b := range base {
			if b.Round == r.Round && f(b) > 0 {
				ratios = append(ratios, f(r)/f(b))
			}
		}
	}
	if len(ratios) == 0 {
		return 0, 0, 0
	}
	return medianOf(ratios), slices.Min(ratios), slices.Max(ratios)
}

func (s *loadSummary) addLearners(rs []loadRun) {
	var cpu, life float64
	for _, r := range rs {
		s.Attempts += r.Attempts
		if l := r.Learner; l != nil {
			s.Hits += l.Hits
			s.Lost += l.LostEvents
			s.DNSLost += l.DNSLost
			cpu += l.CPUSeconds
			life += r.Seconds + l.AttachSeconds + l.StopSeconds + 0.2
		}
	}
	if life > 0 {
		s.LearnerCPUPct = 100 * cpu / life
	}
}

func pick(runs []loadRun, w, v string) []loadRun {
	var out []loadRun
	for _, r := range runs {
		if r.Workload == w && r.Variant == v {
			out = append(out, r)
		}
	}
	return out
}

func field(rs []loadRun, f func(loadRun) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// printLoads prints one table of the workloads: the bare and learner
// medians, the ratios and their spread, and whether every attempt was
// counted.
func printLoads(w io.Writer, o *output) {
	if len(o.Summary) == 0 {
		return
	}
	fmt.Fprintf(w, "learner cost (%s x %d rounds, interleaved; medians):\n", o.Config.Duration, o.Config.Rounds)
	fmt.Fprintf(w, "  %-13s %-9s %12s %7s  %-24s %7s  %-24s %7s  %s\n", "workload", "variant", "rate", "ratio", "paired ratio (min-max)", "cpu", "paired cpu (min-max)", "/empty", "events")
	for _, s := range o.Summary {
		rate := fmt.Sprintf("%.0f %s", s.Median, s.Unit)
		if s.Variant == variantBare {
			fmt.Fprintf(w, "  %-13s %-9s %16s  (runs %.0f-%.0f)\n", s.Workload, s.Variant, rate, s.MinRate, s.MaxRate)
			continue
		}
		ev := fmt.Sprintf("hits %d, lost %d, dns lost %d", s.Hits, s.Lost, s.DNSLost)
		if s.Attempts > 0 {
			ev = fmt.Sprintf("hits %d / %d attempts, lost %d, dns lost %d", s.Hits, s.Attempts, s.Lost, s.DNSLost)
		}
		overEmpty := "      -"
		if s.OverEmpty > 0 {
			overEmpty = fmt.Sprintf("%7.3f", s.OverEmpty)
		}
		fmt.Fprintf(w, "  %-13s %-9s %16s %7.3f  %.3f (%.3f-%.3f)       %7.3f  %.3f (%.3f-%.3f)       %s  %s, learner cpu %.1f%%\n",
			s.Workload, s.Variant, rate, s.Ratio, s.Paired, s.PairedMin, s.PairedMax, s.CPURatio,
			s.PairedCPU, s.PairedCPUMin, s.PairedCPUMax, overEmpty, ev, s.LearnerCPUPct)
	}
	for _, s := range o.Summary {
		if s.OverCompare > 0 {
			fmt.Fprintf(w, "  %-13s learner / compare, paired cpu: %.3f (%.3f-%.3f)\n", s.Workload, s.OverCompare, s.OverCompareMin, s.OverCompareMax)
		}
		if s.PairedClientCPU > 0 {
			fmt.Fprintf(w, "  %-13s %-9s the client's cpu alone, paired: %.3f (%.3f-%.3f)\n", s.Workload, s.Variant, s.PairedClientCPU, s.PairedClientCPUMin, s.PairedClientCPUMax)
		}
	}
	fmt.Fprintln(w, "  per round (rate, ratio to the bare run of the round; rate per CPU-second, its ratio):")
	for _, r := range o.Runs {
		fmt.Fprintf(w, "    %d %-13s %-9s %10.0f", r.Round, r.Workload, r.Variant, r.Rate)
		if bare := pick(o.Runs, r.Workload, variantBare); r.Variant != variantBare {
			for _, b := range bare {
				if b.Round == r.Round && b.Rate > 0 {
					fmt.Fprintf(w, "  %.3f", r.Rate/b.Rate)
				}
			}
		}
		fmt.Fprintf(w, "  cpu %10.0f", r.CPURate)
		if bare := pick(o.Runs, r.Workload, variantBare); r.Variant != variantBare {
			for _, b := range bare {
				if b.Round == r.Round && b.CPURate > 0 {
					fmt.Fprintf(w, "  %.3f", r.CPURate/b.CPURate)
				}
			}
		}
		fmt.Fprintln(w)
	}
}

// parseLoads picks workloads by name ("all": every one).
func parseLoads(names string) ([]workload, error) {
	all := workloads()
	if names == "all" || names == "" {
		return all, nil
	}
	var out []workload
	for _, n := range strings.Split(names, ",") {
		i := slices.IndexFunc(all, func(w workload) bool { return w.Name == strings.TrimSpace(n) })
		if i < 0 {
			var known []string
			for _, w := range all {
				known = append(known, w.Name)
			}
			return nil, fmt.Errorf("unknown workload %q (known: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Servers: the storm's acceptors (in this process), an iperf3 server and a
// UDP sink, all in the namespace and outside the cgroup.

func (b *bench) startServers(cl *benchutil.Cleaner, acceptors int) error {
	srv, err := startServer("/run/netns/"+b.netns, acceptors)
	if err != nil {
		return err
	}
	var once sync.Once
	cl.Add(func() { once.Do(srv.close) })
	b.port = srv.port
	benchutil.Logf("storm server on 127.0.0.1:%d in %s, %d acceptors", b.port, b.netns, acceptors)
	if err := b.startIperf(cl); err != nil {
		return err
	}
	return b.startSink(cl)
}

// startIperf starts "iperf3 -s" in the namespace and waits for its
// listening line.
func (b *bench) startIperf(cl *benchutil.Cleaner) error {
	b.iperfPort = 5201
	cmd := exec.Command("ip", "netns", "exec", b.netns, "iperf3", "-s", "-p", strconv.Itoa(b.iperfPort), "--forceflush")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(b.srvFD.Fd()), Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start iperf3 -s: %w", err)
	}
	cl.Add(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server listening") {
				ready <- nil
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- errors.New("iperf3 -s exited before listening")
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("iperf3 -s did not listen within 10s")
	}
}

// startSink binds the UDP socket the sendto workload sends to; nothing
// reads it, so datagrams past its buffer are dropped there, cheaply and
// alike for every variant.
func (b *bench) startSink(cl *benchutil.Cleaner) error {
	return inNetns("/run/netns/"+b.netns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(fd)
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return err
		}
		b.sinkPort = sa.(*unix.SockaddrInet4).Port
		cl.Add(func() { unix.Close(fd) })
		return nil
	})
}

// ---------------------------------------------------------------------------
// Clients.

func (b *bench) runStorm(d time.Duration, clients int) (loadResult, error) {
	ctx, cancel := context.WithTimeout(b.ctx, d+60*time.Second)
	defer cancel()
	var r stormResult
	cmd := b.clientCmd(ctx, childEnv+"=storm", "EGB_PORT="+strconv.Itoa(b.port),
		"EGB_DURATION="+d.String(), "EGB_CLIENTS="+strconv.Itoa(clients))
	cpu, err := runChild(cmd, &r)
	return loadResult{Units: float64(r.Connects), Attempts: r.Attempts, Errors: r.Errors, FirstErr: r.FirstErr,
		Seconds: r.Seconds, CPU: cpu}, err
}

func (b *bench) runSendto(d time.Duration) (loadResult, error) {
	ctx, cancel := context.WithTimeout(b.ctx, d+60*time.Second)
	defer cancel()
	var r udpResult
	cmd := b.clientCmd(ctx, childEnv+"=sendto", "EGB_PORT="+strconv.Itoa(b.sinkPort), "EGB_DURATION="+d.String())
	cpu, err := runChild(cmd, &r)
	return loadResult{Units: float64(r.Sent), Attempts: r.Sent + r.Errors, Errors: r.Errors, FirstErr: r.FirstErr,
		Seconds: r.Seconds, CPU: cpu}, err
}

// childSendto sends 64-byte datagrams to 127.0.0.1:EGB_PORT with sendto()
// on one unconnected socket for EGB_DURATION.
func childSendto() int {
	port, err1 := strconv.Atoi(os.Getenv("EGB_PORT"))
	dur, err2 := time.ParseDuration(os.Getenv("EGB_DURATION"))
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(os.Stderr, "sendto child: bad environment:", err)
		return 2
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendto child:", err)
		return 1
	}
	defer unix.Close(fd)
	runtime.LockOSThread()
	sa := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	payload := make([]byte, 64)
	var out udpResult
	start := time.Now()
	end := start.Add(dur)
	for time.Now().Before(end) {
		for range 256 {
			out.send(fd, payload, sa)
		}
	}
	return out.print(start)
}

// runIperf runs an iperf3 client in the cgroup and namespace against the
// bench's server for d (whole seconds, at least 1) and reads its JSON.
func (b *bench) runIperf(d time.Duration, args ...string) (loadResult, error) {
	secs := max(1, int(math.Ceil(d.Seconds())))
	ctx, cancel := context.WithTimeout(b.ctx, time.Duration(secs)*time.Second+60*time.Second)
	defer cancel()
	udp := slices.Contains(args, "-u")
	length := []string{"-t", strconv.Itoa(secs)}
	if !udp && b.bulkBytes != "" {
		length = []string{"-n", b.bulkBytes}
	}
	if !udp && b.bulkAffinity != "" {
		length = append(length, "-A", b.bulkAffinity)
	}
	argv := append(append([]string{"--net=/run/netns/" + b.netns, "--", "iperf3", "-c", "127.0.0.1", "-p", strconv.Itoa(b.iperfPort),
		"-J"}, length...), args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(b.cgroupFD.Fd()), Pdeathsig: syscall.SIGKILL}
	var rep iperfReport
	srv0, err := cgroupCPU(b.srvCgroup)
	if err != nil {
		return loadResult{}, err
	}
	cpu, err := runChild(cmd, &rep)
	if err != nil {
		return loadResult{}, err
	}
	srv1, err := cgroupCPU(b.srvCgroup)
	if err != nil {
		return loadResult{}, err
	}
	if rep.Error != "" {
		return loadResult{}, fmt.Errorf("iperf3: %s", rep.Error)
	}
	if udp {
		s := rep.End.Sum
		return loadResult{Units: float64(s.Packets), Seconds: s.Seconds, CPU: cpu, ServerCPU: srv1 - srv0}, nil
	}
	s := rep.End.SumSent
	return loadResult{Units: float64(s.Bytes) / 1e6, Seconds: s.Seconds, CPU: cpu, ServerCPU: srv1 - srv0}, nil
}

// cgroupCPU reads the CPU seconds a cgroup's processes used
// (cpu.stat usage_usec: every cgroup v2 directory has it).
func cgroupCPU(path string) (float64, error) {
	raw, err := os.ReadFile(filepath.Join(path, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("read cpu.stat: %w", err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "usage_usec "); ok {
			us, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read cpu.stat: %w", err)
			}
			return float64(us) / 1e6, nil
		}
	}
	return 0, fmt.Errorf("read cpu.stat of %s: no usage_usec", path)
}

// iperfReport is what learnbench reads of iperf3 -J.
type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		Sum struct {
			Packets uint64  `json:"packets"`
			Seconds float64 `json:"seconds"`
		} `json:"sum"`
		SumSent struct {
			Bytes   uint64  `json:"bytes"`
			Seconds float64 `json:"seconds"`
		} `json:"sum_sent"`
	} `json:"end"`
}

func loadList(ws []workload) string {
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.Name
	}
	return strings.Join(names, ",")
}

// ---------------------------------------------------------------------------
// The floor: do-nothing programs where the learner attaches its six
// (-empty); -empty-hooks picks some, or adds a second egress program.

// variantEmpty attaches programs that only return "allow" to the hooks the
// learner uses: what any program there costs, before it does anything.
const variantEmpty = "empty"

// startEmpty starts a child of the bench that attaches the do-nothing
// programs, and waits until they are attached; stop ends it.
func (b *bench) startEmpty() (stop func() error, err error) {
	cmd := exec.Command(b.self)
	cmd.Env = []string{childEnv + "=empty", "EGB_CGROUP=" + b.cgroup, "EGB_HOOKS=" + strings.Join(b.emptyHooks, ",")}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return <-done
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, err := attachedPrograms(b.cgroup); err == nil && n >= len(b.emptyHooks) {
			return stop, nil
		}
		select {
		case err := <-done:
			return nil, fmt.Errorf("empty programs: child exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = stop()
			return nil, errors.New("empty programs not attached within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childEmpty attaches the do-nothing programs to EGB_CGROUP, on the hooks
// EGB_HOOKS names, until SIGTERM.
func childEmpty() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	names, err := parseEmptyHooks(os.Getenv("EGB_HOOKS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "empty child:", err)
		return 1
	}
	allow := asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}
	for _, h := range emptyHooks {
		if !slices.Contains(names, h.name) {
			continue
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "empty_" + h.name, Type: h.typ, AttachType: h.attach, Instructions: allow, License: "GPL"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "empty child:", err)
			return 1
		}
		defer prog.Close()
		l, err := link.AttachCgroup(link.CgroupOptions{Path: os.Getenv("EGB_CGROUP"), Attach: h.attach, Program: prog})
		if err != nil {
			fmt.Fprintln(os.Stderr, "empty child:", err)
			return 1
		}
		defer l.Close()
	}
	<-ctx.Done()
	return 0
}
