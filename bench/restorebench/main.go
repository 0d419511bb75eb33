//go:build linux

// Command restorebench measures what putting a large table back costs: the
// time of "egress-enforce restore" for a generation of -flows flows (default
// 100,000), from the store and from the files beside it (the fallback when
// the store cannot be read), and what writing those files adds to an apply.
// It prints figures, not pass/fail; the machine is shared, so it repeats
// each step -rounds times and prints the minimum, median and maximum.
//
// Run it as root from the module root:
//
//	go run ./bench/restorebench [-flows 100000] [-rounds 7]
//
// Everything happens in one network namespace of its own (egrb-XXXXXXXX),
// removed at the end, also on SIGINT/SIGTERM/SIGHUP; the store is in a
// temporary folder.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/store"
)

const nsPrefix = "egrb-"

// quiet swallows restore's logs (the fallback logs at error level, by design).
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func main() { os.Exit(benchMain()) }

func benchMain() int {
	flows := flag.Int("flows", 100000, "flows in the generation")
	rounds := flag.Int("rounds", 7, "repetitions of each step")
	flag.Parse()
	cl, err := benchutil.Start("restorebench", "it creates a network namespace")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cl.Run()
	b, err := setup(cl, *flows)
	if err != nil {
		fmt.Fprintln(os.Stderr, "restorebench:", err)
		return 1
	}
	if err := b.measure(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "restorebench:", err)
		return 1
	}
	return 0
}

type bench struct {
	ns     string
	target nft.Target
	dir    string
	db     string
	plan   *plan.Plan
	st     *store.Store
	cpu    map[string][]float64 // CPU ms of each restore, by store path
}

func setup(cl *benchutil.Cleaner, n int) (*bench, error) {
	b := &bench{ns: nsPrefix + benchutil.RandomID()}
	if err := cl.Netns(b.ns); err != nil {
		return nil, err
	}
	b.target = nft.Target{Netns: b.ns}
	var err error
	if b.dir, err = os.MkdirTemp("", "restorebench"); err != nil {
		return nil, err
	}
	cl.Add(func() { os.RemoveAll(b.dir) })
	b.db = filepath.Join(b.dir, "baseline.db")
	if b.st, err = store.Create(b.db, store.Options{}); err != nil {
		return nil, err
	}
	b.plan = plan.Build(plantest.SynthFlows(n, time.Now(), false), plan.Options{Mode: plan.ModeEnforce,
		DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}, Source: "restorebench"})
	benchutil.Logf("namespace %s, store %s, %d flows, kernel %s", b.ns, b.db, b.plan.Flows, benchutil.KernelRelease())
	return b, nil
}

func (b *bench) dropTable() error {
	if !strings.HasPrefix(b.target.Netns, nsPrefix) {
		panic("restorebench: refusing to act outside its own namespace")
	}
	_, err := nft.Open(b.target).Remove(b.plan.Table)
	return err
}

func (b *bench) measure(rounds int) error {
	var plain, withGen, fromStore, fromFiles []float64
	b.cpu = map[string][]float64{}
	for i := range rounds {
		start := time.Now()
		if _, err := nft.Open(b.target).Apply(b.plan); err != nil {
			return err
		}
		plain = append(plain, ms(time.Since(start)))
		start = time.Now()
		if _, _, err := rollout.Apply(nft.Open(b.target), b.plan, rollout.Options{Store: b.st, Command: "restorebench"}); err != nil {
			return err
		}
		withGen = append(withGen, ms(time.Since(start)))
		d, err := b.restore(b.db)
		if err != nil {
			return err
		}
		fromStore = append(fromStore, d)
		if d, err = b.restoreFromFiles(); err != nil {
			return err
		}
		fromFiles = append(fromFiles, d)
		benchutil.Logf("round %d: apply %.0f ms, apply as a generation %.0f ms, restore %.0f ms, restore from files %.0f ms",
			i+1, plain[i], withGen[i], fromStore[i], fromFiles[i])
	}
	b.report(plain, withGen, fromStore, fromFiles)
	return nil
}

// restore deletes the table and times Restore with the store db.
func (b *bench) restore(db string) (float64, error) {
	if err := b.dropTable(); err != nil {
		return 0, err
	}
	start, cpu := time.Now(), cpuTime()
	res, err := rollout.Restore(rollout.RestoreOptions{DB: db, Kernel: nft.Open(b.target), Table: b.plan.Table, BootPolicy: rollout.BootOpen,
		Command: "restorebench", Logger: quiet})
	d := ms(time.Since(start))
	b.cpu[db] = append(b.cpu[db], ms(cpuTime()-cpu))
	if res == nil || res.Action != rollout.RestoreRestored || res.Elements != b.plan.Flows {
		return 0, fmt.Errorf("restore: %+v %v", res, err)
	}
	if err != nil && res.FromFiles == "" {
		return 0, err
	}
	return d, nil
}

// restoreFromFiles times the fallback: a store path with no store, and the
// files of the real one beside it.
func (b *bench) restoreFromFiles() (float64, error) {
	missing := filepath.Join(b.dir, "missing.db")
	os.RemoveAll(missing + ".applied")
	if out, err := exec.Command("cp", "-a", b.db+".applied", missing+".applied").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("cp: %v: %s", err, out)
	}
	return b.restore(missing)
}

func (b *bench) report(plain, withGen, fromStore, fromFiles []float64) {
	size := func(glob string) int64 {
		var n int64
		files, _ := filepath.Glob(filepath.Join(rollout.AppliedDir(b.db, b.target.Path(), b.plan.Table), glob))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	fmt.Printf("restorebench: %d flows, kernel %s, %d rounds (min / median / max, ms)\n", b.plan.Flows, benchutil.KernelRelease(), len(plain))
	for _, r := range []struct {
		name string
		v    []float64
	}{
		{"apply (netlink, no store)", plain},
		{"apply as a generation (store, files)", withGen},
		{"restore from the store", fromStore},
		{"restore from the files", fromFiles},
		// CPU: user and system time of this process (the restore runs in
		// it; the kernel's share of the netlink transaction is system
		// time), steadier than wall time on a shared machine.
		{"restore from the store, CPU", b.cpu[b.db]},
		{"restore from the files, CPU", b.cpu[filepath.Join(b.dir, "missing.db")]},
	} {
		s := slices.Sorted(slices.Values(r.v))
		fmt.Printf("  %-38s %7.0f %7.0f %7.0f   spread %.0f%%\n", r.name, s[0], s[len(s)/2], s[len(s)-1], 100*(s[len(s)-1]-s[0])/s[len(s)/2])
	}
	fmt.Printf("  files beside the store: plan JSON %.1f MiB, nft script %.1f MiB (per plan kept)\n",
		float64(size("plan-*.json"))/(1<<20), float64(size("plan-*.nft"))/(1<<20))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
