//go:build linux

// Command applybench times "egress-enforce apply --from EXPORT" end to end
// through the CLI (reading the export, building the plan, recording the
// generation, applying, reading back, writing the files beside the store):
//
//   - full: the first apply of an export of -flows flows, into a new store
//     and a namespace without our table;
//   - delta: the next apply, of the same export with -change flows removed
//     and -change others added (the kernel holds the first generation, so
//     it goes as a delta);
//   - replace: the same changed export applied whole (the table deleted
//     first, so the apply replaces it), the fair comparison for delta.
//
// Rounds interleave the three, each in a store of its own; it prints the
// minimum, median and maximum of each and the paired ratio delta/full of
// each round. The machine is shared: never trust one figure. It also
// prints the peak RSS of each apply (/usr/bin/time's).
//
// Run it as root from the module root:
//
//	go run ./bench/applybench [-flows 100000] [-change 100] [-rounds 7] [-compare OTHER-egress-enforce]
//
// Everything happens in one network namespace of its own (egab-XXXXXXXX),
// removed at the end, also on SIGINT/SIGTERM/SIGHUP; the stores and
// exports are in a temporary folder. With EGRESS_PHASES=1 in its
// environment, it prints the phases of each apply (internal/phase): where
// the wall time goes, from the fork; with APPLYBENCH_EXPORTS=DIR it
// copies its two exports there, to profile an apply by hand.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

const nsPrefix = "egab-"

func main() { os.Exit(benchMain()) }

type options struct {
	flows, change, rounds   int
	mode, profiles, compare string
	report                  bool
}

func benchMain() int {
	var o options
	flag.IntVar(&o.flows, "flows", 100000, "flows in the export")
	flag.IntVar(&o.change, "change", 100, "flows removed, and as many added, for the delta")
	flag.IntVar(&o.rounds, "rounds", 7, "rounds (each: full, delta, replace)")
	flag.StringVar(&o.mode, "mode", "enforce", "apply --mode")
	flag.BoolVar(&o.report, "report", false, "also time egress-learn report (text and --json, output discarded) on the store the first full apply filled, once a round")
	flag.StringVar(&o.profiles, "cpuprofile-dir", "", "write a CPU profile of each apply to this folder (EGRESS_CPUPROFILE)")
	flag.StringVar(&o.compare, "compare", "", "another egress-enforce binary (e.g. built from main) that does the same applies in every round, right after this tree's, for ratios paired by round")
	flag.Parse()
	cl, err := benchutil.Start("applybench", "it creates a network namespace")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cl.Run()
	b, err := setup(cl, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "applybench:", err)
		return 1
	}
	if err := b.measure(); err != nil {
		fmt.Fprintln(os.Stderr, "applybench:", err)
		return 1
	}
	return 0
}

type bench struct {
	o             options
	ns, dir, bin  string
	other         string // -compare's binary, "" for none
	learn         string // the egress-learn binary
	base, changed string // the exports
	resolv        string
}

func setup(cl *benchutil.Cleaner, o options) (*bench, error) {
	b := &bench{o: o, ns: nsPrefix + benchutil.RandomID()}
	var err error
	if b.dir, err = os.MkdirTemp("", "applybench"); err != nil {
		return nil, err
	}
	cl.Add(func() { os.RemoveAll(b.dir) })
	b.bin = filepath.Join(b.dir, "egress-enforce")
	b.learn = filepath.Join(b.dir, "egress-learn")
	for bin, pkg := range map[string]string{b.bin: "./cmd/egress-enforce", b.learn: "./cmd/egress-learn"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v: %s", pkg, err, out)
		}
	}
	if o.compare != "" {
		if b.other, err = filepath.Abs(o.compare); err != nil {
			return nil, err
		}
		if _, err := os.Stat(b.other); err != nil {
			return nil, fmt.Errorf("-compare: %w", err)
		}
	}
	if err := cl.Netns(b.ns); err != nil {
		return nil, err
	}
	b.resolv = filepath.Join(b.dir, "resolv.conf")
	if err := os.WriteFile(b.resolv, []byte("nameserver 192.0.2.53\n"), 0o600); err != nil {
		return nil, err
	}
	flows := plantest.SynthFlows(o.flows+o.change, time.Now().Add(-time.Hour), true)
	base, extra := flows[:o.flows], flows[o.flows:]
	changed := append(slices.Clone(base[o.change:]), extra...)
	// egress-learn export writes its flows in key order.
	byKey := func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) }
	slices.SortFunc(base, byKey)
	slices.SortFunc(changed, byKey)
	b.base, b.changed = filepath.Join(b.dir, "base.json"), filepath.Join(b.dir, "changed.json")
	for path, fl := range map[string][]store.Flow{b.base: base, b.changed: changed} {
		if err := writeExport(path, fl); err != nil {
			return nil, err
		}
	}
	// The first apply should not pay for the bench's own work: the
	// exports' dirty pages (~600 MB at 1M flows) written back while it
	// runs, and the bench's heap of their flows. At 1M that made a run's
	// first full apply 7-9.8 s against 5-5.8 s for the next ones.
	base, extra, changed, flows = nil, nil, nil, nil
	syscall.Sync()
	debug.FreeOSMemory()
	benchutil.Logf("namespace %s, %d flows, %d removed and %d added for the delta, kernel %s", b.ns, o.flows, o.change, o.change, benchutil.KernelRelease())
	if dir := os.Getenv("APPLYBENCH_EXPORTS"); dir != "" { // for profiling by hand: the two exports, kept
		for _, path := range []string{b.base, b.changed} {
			data, err := os.ReadFile(path)
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o600)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

func writeExport(path string, flows []store.Flow) error {
	e := store.Export{Format: "egress-baseline/1", Host: "bench", Exported: time.Now(), Users: map[uint32]string{}, Flows: flows}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// run is one apply: its wall time, its CPU time (user and system: less
// sensitive to a busy machine), its peak RSS in KiB.
type run struct {
	wall, cpu time.Duration
	rss       int64
}

// apply runs egress-enforce apply --from export with store db; it returns
// what it took and its output.
func (b *bench) apply(bin, db, export, name string) (run, string, error) {
	if !strings.HasPrefix(b.ns, nsPrefix) {
		panic("applybench: refusing to act outside its own namespace")
	}
	cmd, rss := b.command(bin, "apply", "--from", export, "--mode", b.o.mode)
	cmd.Env = append(os.Environ(), "EGRESS_DB="+db, "EGRESS_NETNS="+b.ns, "EGRESS_RESOLV_CONF="+b.resolv)
	if b.o.profiles != "" {
		cmd.Env = append(cmd.Env, "EGRESS_CPUPROFILE="+filepath.Join(b.o.profiles, name+".prof"))
	}
	phases := os.Getenv("EGRESS_PHASES") != ""
	start := time.Now()
	if phases { // the applies' phases, from the fork (internal/phase)
		cmd.Env = append(cmd.Env, "EGRESS_PHASES="+strconv.FormatInt(start.UnixNano(), 10))
	}
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return run{}, "", fmt.Errorf("apply --from %s: %v: %s", filepath.Base(export), err, out)
	}
	if phases {
		fmt.Printf("%s (%s), wall %.1f ms:\n", name, filepath.Base(bin), ms(took))
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "phase ") {
				fmt.Print("  " + line)
			}
		}
	}
	return run{wall: took, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), rss: rss()}, string(out), nil
}

// command is bin with args under /usr/bin/time, which writes the peak RSS
// rss reads: the rusage of a child Go starts counts the memory of this
// process, whose address space the child shares until it execs. (Without
// /usr/bin/time, rss says 0.) The CPU times of the wait include the
// child's.
func (b *bench) command(bin string, args ...string) (*exec.Cmd, func() int64) {
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		return exec.Command(bin, args...), func() int64 { return 0 }
	}
	f, err := os.CreateTemp(b.dir, "rss")
	if err != nil {
		return exec.Command(bin, args...), func() int64 { return 0 }
	}
	f.Close()
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", f.Name(), bin}, args...)...)
	return cmd, func() int64 {
		defer os.Remove(f.Name())
		data, _ := os.ReadFile(f.Name())
		kib, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		return kib
	}
}

func (b *bench) dropTable() error {
	if !strings.HasPrefix(b.ns, nsPrefix) {
		panic("applybench: refusing to act outside its own namespace")
	}
	_ = exec.Command("ip", "netns", "exec", b.ns, "nft", "delete", "table", "inet", "egress").Run()
	return nil
}

// variant is one binary's applies over the rounds.
type variant struct {
	name, bin       string
	runs            [3][]run // full, delta, replace
	ratio, cpuRatio []float64
}

func (b *bench) measure() error {
	vs := []*variant{{name: "this tree", bin: b.bin}}
	if b.other != "" {
		vs = append(vs, &variant{name: "-compare " + filepath.Base(b.other), bin: b.other})
	}
	var reports [2][]run // text, --json
	for r := range b.o.rounds {
		for i, v := range vs {
			if err := b.round(v, r, i == 0, &reports); err != nil {
				return err
			}
		}
	}
	for _, v := range vs {
		if len(vs) > 1 {
			fmt.Printf("%s (%s):\n", v.name, v.bin)
		}
		b.summary(v)
	}
	if len(vs) > 1 {
		b.paired(vs[0], vs[1])
	}
	for i, name := range []string{"egress-learn report", "egress-learn report --json"} {
		if len(reports[i]) == 0 {
			continue
		}
		var wall, cpu []float64
		var rss int64
		for _, x := range reports[i] {
			wall, cpu, rss = append(wall, ms(x.wall)), append(cpu, ms(x.cpu)), max(rss, x.rss)
		}
		fmt.Printf("  %-32s wall %s ms, cpu %s ms, peak RSS %d MiB (%d flows in the store)\n", name, stats(wall), stats(cpu), rss/1024, b.o.flows)
	}
	return nil
}

// round is round r of variant v: full, delta, replace, each store of its
// own; with report, egress-learn report after the full apply.
func (b *bench) round(v *variant, r int, report bool, reports *[2][]run) error {
	if err := b.dropTable(); err != nil {
		return err
	}
	tag := fmt.Sprintf("%d-%d", r, slices.Index([]string{b.bin, b.other}, v.bin))
	db := filepath.Join(b.dir, "round"+tag+".db")
	defer func() {
		for _, suffix := range []string{"", ".applied", ".lock"} {
			os.RemoveAll(db + suffix)
		}
	}()
	f, _, err := b.apply(v.bin, db, b.base, "full-"+tag)
	if err != nil {
		return err
	}
	if b.o.report && report {
		for i, args := range [][]string{{"report", "--db", db}, {"report", "--json", "--db", db}} {
			x, err := b.time(b.learn, args...)
			if err != nil {
				return err
			}
			reports[i] = append(reports[i], x)
		}
	}
	d, out, err := b.apply(v.bin, db, b.changed, "delta-"+tag)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "as a delta from generation 1") {
		return fmt.Errorf("the second apply was not a delta:\n%s", out)
	}
	_ = b.dropTable()
	p, out, err := b.apply(v.bin, db, b.changed, "replace-"+tag)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "the whole table was replaced") {
		return fmt.Errorf("the third apply did not replace the table:\n%s", out)
	}
	for i, x := range []run{f, d, p} {
		v.runs[i] = append(v.runs[i], x)
	}
	v.ratio, v.cpuRatio = append(v.ratio, ms(d.wall)/ms(f.wall)), append(v.cpuRatio, ms(d.cpu)/ms(f.cpu))
	benchutil.Logf("round %d, %s: full %.0f ms (cpu %.0f), delta %.0f ms (cpu %.0f), replace %.0f ms (cpu %.0f); delta/full %.3f, load %s",
		r+1, v.name, ms(f.wall), ms(f.cpu), ms(d.wall), ms(d.cpu), ms(p.wall), ms(p.cpu), ms(d.wall)/ms(f.wall), loadAverage())
	return nil
}

// summary prints v's figures.
func (b *bench) summary(v *variant) {
	fmt.Printf("apply --from, %d flows, %s mode, %d rounds (min / median / max):\n", b.o.flows, b.o.mode, b.o.rounds)
	for i, name := range []string{"full (new store, no table)", fmt.Sprintf("delta (-%d +%d)", b.o.change, b.o.change), "replace (same change, no table)"} {
		var wall, cpu []float64
		var rss int64
		for _, x := range v.runs[i] {
			wall, cpu, rss = append(wall, ms(x.wall)), append(cpu, ms(x.cpu)), max(rss, x.rss)
		}
		fmt.Printf("  %-32s wall %s ms, cpu %s ms, peak RSS %d MiB\n", name, stats(wall), stats(cpu), rss/1024)
	}
	fmt.Printf("  %-32s wall %s, cpu %s\n", "delta/full, paired by round", statsF(v.ratio, "%.3f"), statsF(v.cpuRatio, "%.3f"))
}

// paired prints a's figures over c's, paired by round.
func (b *bench) paired(a, c *variant) {
	fmt.Printf("this tree / -compare, paired by round (min / median / max):\n")
	for i, name := range []string{"full", "delta", "replace"} {
		var wall, cpu []float64
		for r := range a.runs[i] {
			x, y := a.runs[i][r], c.runs[i][r]
			wall, cpu = append(wall, ms(x.wall)/ms(y.wall)), append(cpu, ms(x.cpu)/ms(y.cpu))
		}
		fmt.Printf("  %-32s wall %s, cpu %s\n", name, statsF(wall, "%.3f"), statsF(cpu, "%.3f"))
	}
}

// loadAverage is the 1-minute load average ("?" when unknown).
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// time runs bin with args, its output discarded, and says what it took.
func (b *bench) time(bin string, args ...string) (run, error) {
	cmd, rss := b.command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		return run{}, fmt.Errorf("%s %v: %v: %s", filepath.Base(bin), args, err, stderr.String())
	}
	return run{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), rss: rss()}, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func stats(v []float64) string { return statsF(v, "%.0f") }

func statsF(v []float64, f string) string {
	s := slices.Sorted(slices.Values(v))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf(f+" / "+f+" / "+f, s[0], med, s[len(s)-1])
}
