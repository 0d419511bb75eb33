//go:build linux

// Command monitorbench measures the monitor ("egress-enforce watch") under
// a flood of distinct denied destinations, and the store's size over a
// long simulated soak. It prints figures; it is not a test.
//
// The flood: a network namespace (egmb-XXXXXXXX) gets our table in enforce
// mode, the real watch binary subscribes to its log, and the bench sends
// one UDP datagram to each of 16 addresses x 65535 ports (1,048,560
// distinct destinations) from inside the namespace, every one dropped. It
// runs with the default drop_log_rate (100/s) and with the log not limited
// (every drop logged: the monitor sees them all), -rounds times each.
// Meanwhile it scrapes /metrics every 100 ms and reads the watch's RSS; at
// the end it reads the peak RSS (VmHWM), the metrics' counters and the
// store's observations.
//
// The soak: a store fed as a busy monitor and enforcer would, one
// simulated day at a time (a moved clock): 20,000 new denied destinations,
// every minute with denials, a learning run and a generation with the plan
// of a 100,000-flow baseline; pruned daily with the defaults (retention
// 90 days, keep_generations 50), and once never pruned, for comparison.
//
// Run it as root from the module root:
//
//	go run ./bench/monitorbench [-rounds 3] [-days 180] [-json]
//
// The namespace is removed at the end, also on failure or SIGINT/SIGTERM.
// No table is ever put in the host's own namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

const (
	nsPrefix = "egmb-"
	group    = 100
	// unlimited is the drop_log_rate that logs every drop of the flood.
	unlimited = 100_000_000
)

// floodResult is one flood through the real watch binary.
type floodResult struct {
	DropLogRate  uint32  `json:"drop_log_rate"`
	Sent         int     `json:"sent"`    // datagrams the flood tried
	Dropped      int     `json:"dropped"` // sendto failed with EPERM
	FloodSeconds float64 `json:"flood_seconds"`
	// The watch process.
	PeakRSSMiB  float64 `json:"peak_rss_mib"` // VmHWM
	FinalRSSMiB float64 `json:"final_rss_mib"`
	// /metrics for 5 s before the flood, and during it.
	IdleP50ms    float64 `json:"idle_scrape_p50_ms"`
	IdleMaxMs    float64 `json:"idle_scrape_max_ms"`
	Scrapes      int     `json:"scrapes"`
	ScrapeP50ms  float64 `json:"scrape_p50_ms"`
	ScrapeMaxMs  float64 `json:"scrape_max_ms"`
	ScrapeErrors int     `json:"scrape_errors"`
	// StallMaxMs is the worst lateness of a 5 ms sleep in the bench
	// process during the flood: how long the machine left a runnable
	// goroutine waiting (other work on a shared machine shows here too).
	StallMaxMs float64 `json:"stall_max_ms"`
	// Counters from the metrics after the flood.
	KernelDropped float64 `json:"kernel_dropped"`
	Unlogged      float64 `json:"unlogged"`
	LogEntries    float64 `json:"log_entries"`
	Unrecorded    float64 `json:"unrecorded"`
	ReceiveErrors float64 `json:"receive_errors"`
	LostLogs      float64 `json:"lost_logs"`
	TopEntries    float64 `json:"top_entries"`
	// The store after the last flush.
	Observations int     `json:"observations"`
	StoreMiB     float64 `json:"store_mib"`
}

type soakResult struct {
	Pruned  bool            `json:"pruned"`
	Days    int             `json:"days"`
	FileMiB map[int]float64 `json:"file_mib"` // by day
	// InUseMiB is the pages holding data (high water mark less free
	// pages); the file grows in steps of bbolt's allocation size.
	InUseMiB    map[int]float64   `json:"in_use_mib"`
	Records     map[string]int    `json:"records"` // at the end
	PruneMillis []float64         `json:"-"`
	Extra       map[string]string `json:"extra,omitempty"`
}

func main() {
	rounds := flag.Int("rounds", 3, "floods per drop_log_rate setting")
	days := flag.Int("days", 180, "simulated days of the soak (0: no soak)")
	asJSON := flag.Bool("json", false, "print the results as JSON")
	flag.Parse()
	clean, err := benchutil.Start("monitorbench", "network namespaces, nftables, NFLOG")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer clean.Run()
	out, err := run(clean, *rounds, *days)
	if err != nil {
		clean.Run()
		fmt.Fprintln(os.Stderr, "monitorbench:", err)
		os.Exit(1)
	}
	if *asJSON {
		_ = benchutil.WriteJSON(os.Stdout, out)
		return
	}
	report(out)
}

type results struct {
	Kernel string        `json:"kernel"`
	CPUs   int           `json:"cpus"`
	Floods []floodResult `json:"floods"`
	Soaks  []soakResult  `json:"soaks"`
}

func run(clean *benchutil.Cleaner, rounds, days int) (*results, error) {
	res := &results{Kernel: benchutil.KernelRelease(), CPUs: runtime.NumCPU()}
	dir, err := os.MkdirTemp("", "monitorbench")
	if err != nil {
		return nil, err
	}
	clean.Add(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "egress-enforce")
	benchutil.Logf("building egress-enforce")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/egress-enforce").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build: %v\n%s", err, out)
	}
	ns, err := newNetns(clean)
	if err != nil {
		return nil, err
	}
	for r := range rounds {
		for _, rate := range []uint32{unlimited, plan.DefaultDropLogRate} {
			benchutil.Logf("flood %d/%d, drop_log_rate %d", r+1, rounds, rate)
			f, err := flood(bin, ns, filepath.Join(dir, fmt.Sprintf("flood-%d-%d.db", r, rate)), rate)
			if err != nil {
				return nil, err
			}
			benchutil.Logf("  peak RSS %.1f MiB, scrapes p50 %.1f ms max %.1f ms (idle before: %.1f, %.1f), %d errors; worst stall %.1f ms",
				f.PeakRSSMiB, f.ScrapeP50ms, f.ScrapeMaxMs, f.IdleP50ms, f.IdleMaxMs, f.ScrapeErrors, f.StallMaxMs)
			res.Floods = append(res.Floods, *f)
		}
	}
	if days > 0 {
		for _, prune := range []bool{true, false} {
			benchutil.Logf("soak of %d days, pruned: %v", days, prune)
			s, err := soak(filepath.Join(dir, fmt.Sprintf("soak-%v.db", prune)), days, prune)
			if err != nil {
				return nil, err
			}
			res.Soaks = append(res.Soaks, *s)
		}
	}
	return res, nil
}

// newNetns makes the flood's namespace: loopback, and a veth pair with
// both ends inside, routing the flood's addresses.
func newNetns(clean *benchutil.Cleaner) (string, error) {
	name := nsPrefix + benchutil.RandomID()
	if err := clean.Netns(name); err != nil {
		return "", err
	}
	for _, args := range [][]string{
		{"link", "add", "mb0", "type", "veth", "peer", "name", "mb1"},
		{"addr", "add", "10.99.0.1/24", "dev", "mb0"},
		{"addr", "add", "10.99.0.2/24", "dev", "mb1"},
		{"link", "set", "mb0", "up"},
		{"link", "set", "mb1", "up"},
		{"route", "add", "10.99.16.0/24", "via", "10.99.0.2"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	return name, nil
}

// target is the flood's namespace; it refuses any other.
func target(ns string) nft.Target {
	if !strings.HasPrefix(ns, nsPrefix) {
		panic("monitorbench: not one of its namespaces: " + ns)
	}
	return nft.Target{Netns: ns}
}

func flood(bin, ns, db string, rate uint32) (*floodResult, error) {
	f := &floodResult{DropLogRate: rate}
	flows := []store.Flow{{FlowKey: store.FlowKey{UID: 0, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("10.99.0.2"), Port: 443}, Hits: 1}}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, DropLogRate: rate, NFLOGGroup: group,
		DNSServers: []netip.Addr{netip.MustParseAddr("10.99.0.2")}})
	if _, err := nft.Open(target(ns)).Apply(p); err != nil {
		return nil, err
	}
	w, err := startWatch(bin, ns, db)
	if err != nil {
		return nil, err
	}
	defer w.kill()
	idleCtx, idleStop := context.WithTimeout(context.Background(), 5*time.Second)
	idle, _ := scrapeLoop(idleCtx, w.url)
	idleStop()
	f.IdleP50ms, f.IdleMaxMs = p50max(idle)
	ctx, stop := context.WithCancel(context.Background())
	var lat []float64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); lat, f.ScrapeErrors = scrapeLoop(ctx, w.url) }()
	go func() { defer wg.Done(); f.StallMaxMs = stallProbe(ctx) }()
	start := time.Now()
	f.Sent, f.Dropped, err = sendFlood(ns)
	f.FloodSeconds = time.Since(start).Seconds()
	stop()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	f.Scrapes = len(lat)
	f.ScrapeP50ms, f.ScrapeMaxMs = p50max(lat)
	if err := w.settle(f); err != nil {
		return nil, err
	}
	f.PeakRSSMiB, f.FinalRSSMiB = w.rss()
	if err := w.stop(); err != nil {
		return nil, err
	}
	return f, readStore(db, f)
}

// stallProbe sleeps 5 ms at a time until ctx ends and returns the worst
// oversleep, in milliseconds.
func stallProbe(ctx context.Context) float64 {
	var worst time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		time.Sleep(5 * time.Millisecond)
		worst = max(worst, time.Since(start)-5*time.Millisecond)
	}
	return float64(worst.Microseconds()) / 1000
}

func p50max(v []float64) (p50, max float64) {
	if len(v) == 0 {
		return 0, 0
	}
	slices.Sort(v)
	return v[len(v)/2], v[len(v)-1]
}

// sendFlood sends one datagram to each of 16 addresses x 65535 ports from
// a thread inside the namespace; each should fail with EPERM (dropped).
func sendFlood(ns string) (sent, dropped int, err error) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies in the namespace
		nsf, err := os.Open("/run/netns/" + target(ns).Netns)
		if err != nil {
			errc <- err
			return
		}
		defer nsf.Close()
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		payload := []byte{'x'}
		for a := range 16 {
			sa := &unix.SockaddrInet4{Addr: [4]byte{10, 99, 16, byte(a)}}
			for port := 1; port <= 65535; port++ {
				sa.Port = port
				sent++
				switch err := unix.Sendto(fd, payload, 0, sa); {
				case errors.Is(err, unix.EPERM):
					dropped++
				case err != nil:
					errc <- fmt.Errorf("sendto: %w", err)
					return
				}
			}
		}
		errc <- nil
	}()
	return sent, dropped, <-errc
}

// scrapeLoop gets /metrics every 100 ms until ctx ends: the latencies in
// milliseconds, and how many failed (5 s timeout).
func scrapeLoop(ctx context.Context, url string) (lat []float64, errs int) {
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		start := time.Now()
		resp, err := client.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			errs++
		} else {
			lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		}
		select {
		case <-ctx.Done():
			return lat, errs
		case <-tick.C:
		}
	}
}
