//go:build linux

// Command learnbench measures what the learner costs: the rate of several
// workloads (TCP connect storms of one and two threads, 64-byte UDP through
// a connected and an unconnected socket, bulk TCP) without a learner, with
// the real egress-learn binary, and for the storm with in-kernel counting
// turned off (one ring buffer record per attempt); and the learner's memory
// after a million UDP datagrams over a hundred thousand (or more) flows. It prints figures and ratios; it is not a test.
//
// Run it as root from the module root:
//
//	go run ./bench/learnbench [-loads all] [-duration 5s] [-rounds 5] [-json]
//
// Everything runs in a uniquely named child cgroup of the cgroup2 mount and
// a uniquely named network namespace, both removed at the end, also on
// SIGINT/SIGTERM. Traffic only goes to loopback inside that namespace.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/store"
)

// childEnv selects a child mode when the program re-executes itself.
const childEnv = "EGB_CHILD"

const (
	variantBare     = "bare"
	variantLearner  = "learner"
	variantPerEvent = "per-event"
	// variantCompare runs another egress-learn binary (-compare), e.g. one
	// built from an earlier commit, in the same rounds.
	variantCompare = "compare"
	// variantUDPEgress runs this tree's egress-learn with
	// --udp-unconnected=egress (-udp-egress): unconnected UDP counted by
	// the egress program, the sendmsg programs not attached.
	variantUDPEgress = "udpegress"
)

// programsUDPEgress is how many programs variantUDPEgress attaches (no
// sendmsg4/6).
const programsUDPEgress = 4

// programsAttached is how many programs a learner attaches to its cgroup
// (connect4/6, sendmsg4/6, egress, ingress; the name check's learning
// program runs from the egress one by a tail call). A learner built before
// that attaches a seventh program (the name check's) right after these
// six, before the bench's pause that lets its readers start.
const programsAttached = 6

func main() {
	switch os.Getenv(childEnv) {
	case "storm":
		os.Exit(childStorm())
	case "udp":
		os.Exit(childUDP())
	case "sendto":
		os.Exit(childSendto())
	case "empty":
		os.Exit(childEmpty())
	case "learner":
		os.Exit(childLearner())
	}
	os.Exit(benchMain())
}

// ---------------------------------------------------------------------------
// Children.

// stormResult is what a connect storm client prints.
type stormResult struct {
	Attempts uint64  `json:"attempts"` // connect() calls
	Connects uint64  `json:"connects"` // connect() calls that succeeded
	Errors   uint64  `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
	Seconds  float64 `json:"seconds"`
}

// childStorm runs EGB_CLIENTS threads doing TCP connect + close to
// 127.0.0.1:EGB_PORT for EGB_DURATION. Sockets close with SO_LINGER 0 (a
// reset), so no TIME_WAIT piles up and the ephemeral ports never run out.
func childStorm() int {
	port, err1 := strconv.Atoi(os.Getenv("EGB_PORT"))
	dur, err2 := time.ParseDuration(os.Getenv("EGB_DURATION"))
	k, err3 := strconv.Atoi(os.Getenv("EGB_CLIENTS"))
	if err := errors.Join(err1, err2, err3); err != nil || k < 1 {
		fmt.Fprintln(os.Stderr, "storm child: bad environment:", err)
		return 2
	}
	sa := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	type counts struct {
		attempts, connects, errors uint64
		firstErr                   error
		_                          [64]byte // keep the counters of two threads off one cache line
	}
	res := make([]counts, k)
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	for i := range res {
		c := &res[i]
		wg.Go(func() {
			runtime.LockOSThread()
			for !stop.Load() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					c.errors++
					if c.firstErr == nil {
						c.firstErr = fmt.Errorf("socket: %w", err)
					}
					time.Sleep(time.Millisecond)
					continue
				}
				_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger)
				c.attempts++
				if err := unix.Connect(fd, sa); err != nil {
					c.errors++
					if c.firstErr == nil {
						c.firstErr = fmt.Errorf("connect: %w", err)
					}
				} else {
					c.connects++
				}
				_ = unix.Close(fd)
			}
		})
	}
	wg.Wait()
	out := stormResult{Seconds: time.Since(start).Seconds()}
	for _, c := range res {
		out.Attempts += c.attempts
		out.Connects += c.connects
		out.Errors += c.errors
		if c.firstErr != nil && out.FirstErr == "" {
			out.FirstErr = c.firstErr.Error()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

// udpResult is what the UDP flow client prints.
type udpResult struct {
	Sent     uint64  `json:"sent"`
	Errors   uint64  `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
	Seconds  float64 `json:"seconds"`
}

// send sends one datagram with sendto() and counts it, sent or failed.
func (r *udpResult) send(fd int, payload []byte, sa unix.Sockaddr) {
	if err := unix.Sendto(fd, payload, 0, sa); err != nil {
		r.Errors++
		if r.FirstErr == "" {
			r.FirstErr = err.Error()
		}
		return
	}
	r.Sent++
}

// print ends a UDP child: the time since start, and the result as JSON
// on stdout; it returns the child's exit code.
func (r *udpResult) print(start time.Time) int {
	r.Seconds = time.Since(start).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return 0
}

// udpAddrs are the destinations of the UDP phase: all of 127/8 is
// loopback, so 127.0.0.2 and the others need no address. Two, or one more
// for each 50,000 flows past 100,000 (setUDPAddrs).
var udpAddrs = [][4]byte{{127, 0, 0, 1}, {127, 0, 0, 2}}

// udpPortsPerAddr is how many ports the UDP phase uses on an address.
const udpPortsPerAddr = 50000

// setUDPAddrs makes udpAddrs enough addresses for flows (at most 250).
func setUDPAddrs(flows int) {
	n := max(2, (flows+udpPortsPerAddr-1)/udpPortsPerAddr)
	udpAddrs = udpAddrs[:0]
	for i := 1; i <= min(n, 250); i++ {
		udpAddrs = append(udpAddrs, [4]byte{127, 0, 0, byte(i)})
	}
}

// childUDP sends EGB_PER_FLOW datagrams to each of EGB_FLOWS flows (the
// udpAddrs × EGB_FLOWS/len(udpAddrs) ports from EGB_BASE_PORT) from one
// unconnected socket with sendto(), one datagram per flow per round.
func childUDP() int {
	flows, err1 := strconv.Atoi(os.Getenv("EGB_FLOWS"))
	perFlow, err2 := strconv.Atoi(os.Getenv("EGB_PER_FLOW"))
	base, err3 := strconv.Atoi(os.Getenv("EGB_BASE_PORT"))
	setUDPAddrs(flows)
	ports := flows / len(udpAddrs)
	if err := errors.Join(err1, err2, err3); err != nil || ports < 1 || base+ports > 65536 {
		fmt.Fprintln(os.Stderr, "udp child: bad environment:", err)
		return 2
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp child:", err)
		return 1
	}
	defer unix.Close(fd)
	runtime.LockOSThread()
	var out udpResult
	payload := []byte{'x'}
	sa := &unix.SockaddrInet4{}
	start := time.Now()
	for range perFlow {
		for _, a := range udpAddrs {
			sa.Addr = a
			for p := base; p < base+ports; p++ {
				sa.Port = p
				out.send(fd, payload, sa)
			}
		}
	}
	return out.print(start)
}

// learnerSummary is what the per-event learner child prints.
type learnerSummary struct {
	Run    store.Run        `json:"run"`
	Status learn.Status     `json:"status"`
	Probe  learn.ProbeStats `json:"probe"`
}

// childLearner runs learn.Run on EGB_CGROUP into EGB_DB until SIGTERM,
// with the options egress-learn uses, and in-kernel counting off when
// EGB_PER_EVENT=1. It is the bench's stand-in for the real binary where
// the CLI has no flag for what is measured.
func childLearner() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	flush, err := time.ParseDuration(os.Getenv("EGB_FLUSH"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "learner child: bad EGB_FLUSH:", err)
		return 2
	}
	opts := learn.DefaultProbeOptions()
	opts.PerEvent = os.Getenv("EGB_PER_EVENT") == "1"
	if path := os.Getenv("EGB_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "learner child:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "learner child:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("EGB_HEAPPROFILE"); path != "" {
		// Diagnosis: keep the heap profile taken at the largest live heap.
		debug.SetMemoryLimit(64 << 20)
		go func() {
			var best uint64
			for {
				time.Sleep(200 * time.Millisecond)
				runtime.GC()
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > best {
					best = m.HeapAlloc
					if f, err := os.Create(path); err == nil {
						_ = pprof.WriteHeapProfile(f)
						f.Close()
					}
				}
			}
		}()
	}
	sum, err := learn.Run(ctx, learn.Config{
		DB:     os.Getenv("EGB_DB"),
		Cgroup: os.Getenv("EGB_CGROUP"),
		Flush:  flush,
		Filter: learn.Filter{Loopback: false},
		Probe:  opts,
	})
	if sum != nil {
		_ = json.NewEncoder(os.Stdout).Encode(learnerSummary{Run: sum.Run, Status: sum.Status, Probe: sum.Probe})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "learner child:", err)
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------
// Results.

type config struct {
	Duration        string `json:"duration"`
	Loads           string `json:"loads"`
	Rounds          int    `json:"rounds"`
	Acceptors       int    `json:"acceptors"`
	FlushInterval   string `json:"flush_interval"`
	UDPFlows        int    `json:"udp_flows"`
	UDPPerFlow      int    `json:"udp_datagrams_per_flow"`
	Cgroup          string `json:"cgroup"`
	Netns           string `json:"netns"`
	Kernel          string `json:"kernel"`
	CPUs            int    `json:"cpus"`
	LearnerBinary   string `json:"learner_binary"`
	PerEventLearner string `json:"per_event_learner"`
}

// learnerRun is what one learner process did.
type learnerRun struct {
	Kind           string  `json:"kind"` // "egress-learn" or "learn.Run (per-event)"
	AttachSeconds  float64 `json:"attach_seconds"`
	StopSeconds    float64 `json:"stop_seconds"`
	ExitCode       int     `json:"exit_code"`
	CPUSeconds     float64 `json:"cpu_seconds"` // user+sys over its whole life
	MaxRSSMiB      float64 `json:"max_rss_mib"` // getrusage of the exited process
	ProgramsLeft   int     `json:"programs_left"`
	Flows          int     `json:"flows"`
	Hits           uint64  `json:"hits"`             // sum of the stored flows' hits
	ReportHits     int64   `json:"report_hits"`      // sum of hits of `egress-learn report --json`; -1: not run
	RunEvents      uint64  `json:"run_events"`       // store.Run.Events
	LostEvents     uint64  `json:"lost_events"`      // store.Run.LostEvents
	DNSLost        uint64  `json:"dns_lost"`         // store.Run.DNSLost
	Finished       bool    `json:"finished"`         // store.Run.Finished
	ChildLostProbe *uint64 `json:"child_probe_lost"` // per-event child: ProbeStats.Lost()
	MapFull        *uint64 `json:"child_map_full,omitempty"`
}

type rssResult struct {
	Flows          int     `json:"flows"`
	Datagrams      uint64  `json:"datagrams"`
	SendErrors     uint64  `json:"send_errors"`
	SendSeconds    float64 `json:"send_seconds"`
	FlushWaitSecs  float64 `json:"flush_wait_seconds"`
	PeakMiB        float64 `json:"peak_mib"`             // VmHWM after a flush, before SIGTERM
	RSSMiB         float64 `json:"rss_mib"`              // VmRSS then
	MaxRSSExitMiB  float64 `json:"max_rss_at_exit_mib"`  // getrusage, including the final flush
	PeakStopMiB    float64 `json:"peak_stop_mib"`        // VmHWM sampled until the exit, including the final flush
	StoredFlows    int     `json:"stored_flows"`         // flows in the store
	MatchingFlows  int     `json:"matching_flows"`       // of them, UDP to the bench's addresses and ports
	Hits           uint64  `json:"hits"`                 // sum of hits of the matching flows
	AllHits        uint64  `json:"all_hits"`             // sum of hits of every stored flow
	HitsBeforeStop uint64  `json:"hits_at_flush_before"` // store.Run.Events at the flush the RSS was read after
	AtFlush        procMem `json:"at_flush"`             // /proc/PID/status after that flush
	Sampled        procMem `json:"sampled_max"`          // largest values sampled every 50ms until then
	DBFileMiB      float64 `json:"db_file_mib"`
	GoHeapPeakMB   float64 `json:"go_heap_peak_mb"` // from GODEBUG=gctrace=1
	GoHeapLiveMB   float64 `json:"go_heap_live_mb"`
	GCs            int     `json:"gcs"`
	// Seconds from the last datagram until a flush had recorded all of them
	// (seen by the bench / the run's end time of that flush); -1: never.
	AllCountedSecs   float64 `json:"all_counted_seconds"`
	AllCountedRunEnd float64 `json:"all_counted_run_end_seconds"`
	AtAllCounted     procMem `json:"at_all_counted"`
	// Longest time from a flush's start (its run end time) until the
	// bench, polling every -watch-interval, saw it committed.
	MaxFlushSecs float64      `json:"max_flush_seconds"`
	Flushes      []flushPoint `json:"flushes"`
	Learner      learnerRun   `json:"learner"`
}

type output struct {
	Config  config        `json:"config"`
	Runs    []loadRun     `json:"runs,omitempty"`
	Summary []loadSummary `json:"summary,omitempty"`
	RSS     *rssResult    `json:"rss,omitempty"`
	Notes   []string      `json:"notes,omitempty"`
}

// ---------------------------------------------------------------------------
// The bench.

type bench struct {
	ctx          context.Context
	self         string // this executable, re-executed for the children
	tmp          string
	binary       string // egress-learn
	cgroup       string
	cgroupFD     *os.File
	netns        string
	port         int // the storm server
	iperfPort    int
	sinkPort     int // the UDP sink of the sendto workload
	flush        time.Duration
	keepLogs     bool
	stopDelay    time.Duration
	watchEvery   time.Duration
	rssProfile   string
	notes        []string
	learnerNo    int
	compare      string   // -compare: another egress-learn binary
	udpEgress    bool     // -udp-egress: also run the learner with --udp-unconnected=egress
	empty        bool     // -empty: also measure do-nothing programs
	emptyHooks   []string // -empty-hooks: the hooks they go on
	progStats    bool     // -prog-stats: read each program's run time
	bulkBytes    string   // -bulk-bytes: tcp-bulk sends this much (iperf3 -n)
	bulkAffinity string   // -bulk-affinity: iperf3 -A for tcp-bulk
	srvCgroup    string   // the iperf3 server's cgroup (a sibling of cgroup): its CPU time
	srvFD        *os.File
}

func (b *bench) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	b.notes = append(b.notes, s)
	benchutil.Logf("NOTE: %s", s)
}

func benchMain() int {
	duration := flag.Duration("duration", 5*time.Second, "length of each workload run")
	loadNames := flag.String("loads", "all", "workloads to run, comma-separated: storm2, storm1, udp64, udp64-sendto, tcp-bulk (all: every one)")
	perEvent := flag.String("per-event", "storm2", "workloads also run with in-kernel counting off (comma-separated; none: no such runs)")
	rounds := flag.Int("rounds", 5, "rounds; each runs every workload bare and with the learner, back to back")
	acceptors := flag.Int("acceptors", 2, "accepting threads of the server")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured bare storm before the rounds (0: none)")
	flush := flag.Duration("flush-interval", 5*time.Second, "learner --flush-interval")
	udpFlows := flag.Int("udp-flows", 100000, "distinct UDP flows of the RSS phase (on 127.0.0.1 and 127.0.0.2, and one more address for each 50,000 past 100,000)")
	udpPerFlow := flag.Int("udp-per-flow", 10, "datagrams per UDP flow in the RSS phase")
	skipStorm := flag.Bool("skip-storm", false, "skip the workloads (the learner's cost)")
	skipRSS := flag.Bool("skip-rss", false, "skip the RSS phase")
	asJSON := flag.Bool("json", false, "print the results as JSON")
	keep := flag.Bool("keep-logs", false, "keep the temporary folder (learner logs and stores)")
	rssProfile := flag.String("rss-profile", "", "diagnosis: run the RSS phase's learner as learn.Run in a child of the bench (same options as egress-learn) and write its CPU profile to this file")
	watchEvery := flag.Duration("watch-interval", 200*time.Millisecond, "how often the RSS phase reads the learner's store for new flushes")
	compare := flag.String("compare", "", "also run this egress-learn binary (e.g. one built from an earlier commit) as variant \"compare\" in every round")
	udpEgress := flag.Bool("udp-egress", false, "also run variant \""+variantUDPEgress+"\": this tree's learner with --udp-unconnected=egress (unconnected UDP counted by the egress program; the sendmsg programs not attached)")
	empty := flag.Bool("empty", false, "also run variant \"empty\": programs that do nothing, on the learner's six hooks (what any program there costs)")
	emptyHookList := flag.String("empty-hooks", "all", "hooks of the -empty variant, comma-separated: connect4, connect6, sendmsg4, sendmsg6, egress, ingress, egress2 (a second egress program, as the learner attached before its name check ran by a tail call); all: the learner's six")
	bulkBytes := flag.String("bulk-bytes", "", "tcp-bulk sends this many bytes (iperf3 -n, e.g. 2G) instead of running for -duration")
	bulkAffinity := flag.String("bulk-affinity", "", "tcp-bulk pins the iperf3 client and server to these CPUs (iperf3 -A N,M; e.g. 1,1: both on CPU 1, so the scheduler's placement does not change the work per byte)")
	progStats := flag.Bool("prog-stats", false, "turn kernel.bpf_stats_enabled on for the bench and print each attached program's run time per run and per unit (ns/connect, ns/datagram)")
	stopDelay := flag.Duration("stop-delay", 0, "wait this long after the storm client exits before sending the learner SIGTERM")
	flag.Parse()
	loads, err := parseLoads(*loadNames)
	if err != nil {
		fmt.Fprintln(os.Stderr, "learnbench:", err)
		return 2
	}
	if *rounds < 1 || *acceptors < 1 || *duration <= 0 || *udpFlows < 2 || *udpPerFlow < 1 {
		fmt.Fprintln(os.Stderr, "learnbench: -rounds, -acceptors, -udp-per-flow must be at least 1, -udp-flows at least 2, -duration positive")
		return 2
	}
	hooks, err := parseEmptyHooks(*emptyHookList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "learnbench:", err)
		return 2
	}
	setUDPAddrs(*udpFlows)
	if *udpFlows/len(udpAddrs) > udpPortsPerAddr {
		fmt.Fprintln(os.Stderr, "learnbench: -udp-flows is at most 12,500,000 (250 addresses x 50000 ports)")
		return 2
	}
	if err := benchutil.Require("learnbench", "it creates a cgroup and a network namespace and loads eBPF", "go", "ip", "nsenter", "bpftool", "iperf3"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// Start every child from the main thread; Pdeathsig follows the thread
	// that forked.
	runtime.LockOSThread()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cl benchutil.Cleaner
	defer cl.Run()
	cl.OnSignal(func(s os.Signal) {
		benchutil.Logf("got %s: stopping and cleaning up", s)
		cancel()
		// Give the children time to stop; a second signal cuts it short.
		time.Sleep(20 * time.Second)
	})

	b := &bench{ctx: ctx, flush: *flush, keepLogs: *keep, stopDelay: *stopDelay, watchEvery: *watchEvery, rssProfile: *rssProfile, compare: *compare, udpEgress: *udpEgress, empty: *empty, emptyHooks: hooks, progStats: *progStats, bulkBytes: *bulkBytes, bulkAffinity: *bulkAffinity}
	if *progStats {
		restore, err := enableBPFStats()
		if err != nil {
			fmt.Fprintln(os.Stderr, "learnbench:", err)
			return 1
		}
		cl.Add(restore)
	}
	out, err := b.run(&cl, runOptions{
		duration: *duration, rounds: *rounds, acceptors: *acceptors, warmup: *warmup,
		udpFlows: *udpFlows, udpPerFlow: *udpPerFlow, skipStorm: *skipStorm, skipRSS: *skipRSS,
		loads: loads, perEvent: strings.Split(*perEvent, ","),
	})
	if out != nil {
		if *asJSON {
			_ = benchutil.WriteJSON(os.Stdout, out)
		} else {
			printSummary(os.Stdout, out)
		}
	}
	if err != nil {
		benchutil.Logf("error: %v", err)
		return 1
	}
	return 0
}

type runOptions struct {
	duration   time.Duration
	rounds     int
	acceptors  int
	warmup     time.Duration
	udpFlows   int
	udpPerFlow int
	skipStorm  bool
	skipRSS    bool
	loads      []workload
	perEvent   []string
}

func (b *bench) run(cl *benchutil.Cleaner, o runOptions) (*output, error) {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if b.tmp, err = os.MkdirTemp("", "egress-bench-"); err != nil {
		return nil, err
	}
	cl.Add(func() {
		if b.keepLogs {
			benchutil.Logf("kept %s", b.tmp)
			return
		}
		_ = os.RemoveAll(b.tmp)
	})

	if err := b.buildLearner(); err != nil {
		return nil, err
	}
	if err := b.makeLab(cl); err != nil {
		return nil, err
	}
	res := &output{Config: config{
		Duration: o.duration.String(), Loads: loadList(o.loads), Rounds: o.rounds, Acceptors: o.acceptors,
		FlushInterval: b.flush.String(), UDPFlows: o.udpFlows / len(udpAddrs) * len(udpAddrs), UDPPerFlow: o.udpPerFlow,
		Cgroup: b.cgroup, Netns: b.netns, Kernel: benchutil.KernelRelease(), CPUs: runtime.NumCPU(),
		LearnerBinary:   "egress-learn run --ignore-loopback=false (built from ./cmd/egress-learn)",
		PerEventLearner: "learn.Run with DefaultProbeOptions + PerEvent, in a child process of the bench",
	}}
	defer func() { res.Notes = b.notes }()

	if n, err := attachedPrograms(b.cgroup); err != nil {
		return nil, fmt.Errorf("bpftool cgroup show: %w", err)
	} else if n != 0 {
		return nil, fmt.Errorf("fresh cgroup %s already has %d programs", b.cgroup, n)
	}

	if !o.skipStorm {
		if err := b.loads(cl, o, res); err != nil {
			return res, err
		}
	}
	if !o.skipRSS {
		r, err := b.rss(o)
		if r != nil {
			res.RSS = r
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// buildLearner builds the real binary.
func (b *bench) buildLearner() error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("find the module root (run from inside the module): %v", err)
	}
	b.binary = filepath.Join(b.tmp, "egress-learn")
	benchutil.Logf("building %s", b.binary)
	build := exec.CommandContext(b.ctx, "go", "build", "-o", b.binary, "./cmd/egress-learn")
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if outb, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/egress-learn: %v\n%s", err, outb)
	}
	return nil
}

// makeLab makes the bench's cgroup and network namespace; cl removes them.
func (b *bench) makeLab(cl *benchutil.Cleaner) error {
	mount, err := cgroupbpf.Mount()
	if err != nil {
		return err
	}
	b.cgroup = filepath.Join(mount, "egress-bench-"+benchutil.RandomID())
	if filepath.Dir(b.cgroup) != filepath.Clean(mount) || b.cgroup == mount {
		return fmt.Errorf("refusing cgroup path %s", b.cgroup)
	}
	if err := os.Mkdir(b.cgroup, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	cl.Add(func() { removeCgroup(b.cgroup) })
	if b.cgroupFD, err = os.Open(b.cgroup); err != nil {
		return err
	}
	cl.Add(func() { _ = b.cgroupFD.Close() })
	// The iperf3 server's own cgroup, beside the bench's (no program is
	// attached to it): its cpu.stat counts the server's CPU time to the
	// microsecond, every thread's, those that exited too.
	b.srvCgroup = b.cgroup + "-srv"
	if err := os.Mkdir(b.srvCgroup, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	cl.Add(func() { removeCgroup(b.srvCgroup) })
	if b.srvFD, err = os.Open(b.srvCgroup); err != nil {
		return err
	}
	cl.Add(func() { _ = b.srvFD.Close() })

	b.netns = "egb-" + benchutil.RandomID()
	if err := cl.Netns(b.netns); err != nil {
		return err
	}
	benchutil.Logf("cgroup %s, netns %s", b.cgroup, b.netns)
	return nil
}

// removeCgroup kills what still runs in the cgroup and removes it.
func removeCgroup(path string) {
	_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			benchutil.Logf("remove cgroup %s: %v", path, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attachedPrograms counts the programs attached to the cgroup itself.
func attachedPrograms(cgroup string) (int, error) {
	out, err := exec.Command("bpftool", "-j", "cgroup", "show", cgroup).Output()
	if err != nil {
		return 0, err
	}
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return 0, nil
	}
	var progs []json.RawMessage
	if err := json.Unmarshal(out, &progs); err != nil {
		return 0, fmt.Errorf("parse bpftool output %q: %w", out, err)
	}
	return len(progs), nil
}

// ---------------------------------------------------------------------------
// Server.

type server struct {
	fd       int
	port     int
	wg       sync.WaitGroup
	accepted atomic.Uint64
}

// inNetns runs fn on a locked OS thread that entered the namespace; the
// thread is thrown away afterwards.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// startServer listens on 127.0.0.1:0 inside the namespace and accepts and
// closes connections on n threads.
func startServer(netnsPath string, n int) (*server, error) {
	s := &server{fd: -1}
	err := inNetns(netnsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		s.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(fd, 4096); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		s.port = sa.(*unix.SockaddrInet4).Port
		return nil
	})
	if err != nil {
		if s.fd >= 0 {
			_ = unix.Close(s.fd)
		}
		return nil, fmt.Errorf("listen in %s: %w", netnsPath, err)
	}
	for range n {
		s.wg.Go(func() {
			runtime.LockOSThread()
			for {
				nfd, _, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
				if err != nil {
					if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EMFILE) {
						continue
					}
					return // EINVAL after shutdown
				}
				_ = unix.Close(nfd)
				s.accepted.Add(1)
			}
		})
	}
	return s, nil
}

func (s *server) close() {
	_ = unix.Shutdown(s.fd, unix.SHUT_RDWR) // wakes the blocked accepts
	s.wg.Wait()
	_ = unix.Close(s.fd)
}

// ---------------------------------------------------------------------------
// Clients.

func (b *bench) clientCmd(ctx context.Context, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+b.netns, "--", b.self)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(b.cgroupFD.Fd()), Pdeathsig: syscall.SIGKILL}
	return cmd
}

// runChild runs a client to completion and decodes its JSON result.
func runChild(cmd *exec.Cmd, v any) (cpu float64, err error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("client: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		return 0, fmt.Errorf("client output %q: %w", stdout.String(), err)
	}
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(), nil
}

// ---------------------------------------------------------------------------
// Learners.

type learnerProc struct {
	kind    string
	cmd     *exec.Cmd
	db      string
	logPath string
	stdout  bytes.Buffer
	started time.Time
	done    chan struct{}
	waitErr error
	attach  time.Duration
}

// startLearner starts the real binary (perEvent false) or the per-event
// child on the bench cgroup and waits until its programs are attached.
// Learner kinds.
const (
	learnerBinary    = iota // the real egress-learn binary
	learnerChild            // learn.Run in a child of the bench, default options
	learnerPerEvent         // learn.Run in a child of the bench, PerEvent
	learnerCompare          // the -compare binary
	learnerUDPEgress        // the real binary with --udp-unconnected=egress
)

func (b *bench) startLearner(kind int, name string, extraEnv ...string) (*learnerProc, error) {
	b.learnerNo++
	l := &learnerProc{
		db:      filepath.Join(b.tmp, fmt.Sprintf("%02d-%s.db", b.learnerNo, name)),
		logPath: filepath.Join(b.tmp, fmt.Sprintf("%02d-%s.log", b.learnerNo, name)),
		done:    make(chan struct{}),
	}
	want := programsAttached
	env := append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, extraEnv...)
	if kind == learnerChild || kind == learnerPerEvent {
		l.kind = "learn.Run (child of the bench)"
		perEvent := "0"
		if kind == learnerPerEvent {
			l.kind = "learn.Run per-event (child of the bench)"
			perEvent = "1"
		}
		l.cmd = exec.Command(b.self)
		l.cmd.Env = append(env, childEnv+"=learner", "EGB_PER_EVENT="+perEvent, "EGB_CGROUP="+b.cgroup,
			"EGB_DB="+l.db, "EGB_FLUSH="+b.flush.String())
	} else {
		l.kind = "egress-learn"
		bin := b.binary
		if kind == learnerCompare {
			l.kind, bin = "egress-learn (-compare)", b.compare
		}
		l.cmd = exec.Command(bin, "run", "--cgroup", b.cgroup, "--db", l.db,
			"--ignore-loopback=false", "--flush-interval", b.flush.String())
		if kind == learnerUDPEgress {
			l.kind = "egress-learn --udp-unconnected=egress"
			l.cmd.Args = append(l.cmd.Args, "--udp-unconnected=egress")
			want = programsUDPEgress
		}
		l.cmd.Env = env
	}
	logFile, err := os.Create(l.logPath)
	if err != nil {
		return nil, err
	}
	l.cmd.Stdout = &l.stdout
	l.cmd.Stderr = logFile
	// If the bench dies, the learner gets SIGTERM and detaches.
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	l.started = time.Now()
	if err := l.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", l.kind, err)
	}
	go func() {
		l.waitErr = l.cmd.Wait()
		logFile.Close()
		close(l.done)
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := attachedPrograms(b.cgroup)
		if err == nil && n >= want {
			l.attach = time.Since(l.started)
			break
		}
		select {
		case <-l.done:
			return nil, fmt.Errorf("%s exited before attaching (%v): %s", l.kind, l.waitErr, l.logTail())
		case <-b.ctx.Done():
			l.kill()
			return nil, b.ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			l.kill()
			return nil, fmt.Errorf("%s did not attach within 30s (%d programs): %s", l.kind, n, l.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The programs are attached before the run record and the ring buffer
	// readers start; give those a moment so startup is not measured.
	time.Sleep(200 * time.Millisecond)
	return l, nil
}

func (l *learnerProc) logTail() string {
	data, _ := os.ReadFile(l.logPath)
	s := strings.TrimSpace(string(data))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func (l *learnerProc) kill() {
	_ = l.cmd.Process.Kill()
	<-l.done
}

// stop sends SIGTERM and waits for the exit, then reads what the learner
// stored.
func (b *bench) stopLearner(l *learnerProc, withReport bool) (*learnerRun, error) {
	r := &learnerRun{Kind: l.kind, AttachSeconds: l.attach.Seconds(), ReportHits: -1}
	t0 := time.Now()
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(60 * time.Second):
		l.kill()
		return r, fmt.Errorf("%s did not stop within 60s of SIGTERM: %s", l.kind, l.logTail())
	}
	r.StopSeconds = time.Since(t0).Seconds()
	ps := l.cmd.ProcessState
	r.ExitCode = ps.ExitCode()
	r.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSSMiB = float64(ru.Maxrss) / 1024
	}
	if r.ExitCode != 0 {
		b.note("%s exited %d after SIGTERM: %s", l.kind, r.ExitCode, l.logTail())
	}
	if n, err := attachedPrograms(b.cgroup); err == nil {
		r.ProgramsLeft = n
		if n != 0 {
			b.note("%s left %d programs attached after exiting", l.kind, n)
		}
	}
	if l.stdout.Len() > 0 {
		var s learnerSummary
		if json.Unmarshal(l.stdout.Bytes(), &s) == nil {
			lost := s.Probe.Lost()
			r.ChildLostProbe = &lost
			r.MapFull = &s.Probe.MapFull
		}
	}

	st, err := store.Open(l.db, store.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		return r, fmt.Errorf("open %s store: %w", l.kind, err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		return r, err
	}
	r.Flows = len(snap.Flows)
	for _, f := range snap.Flows {
		r.Hits += f.Hits
	}
	if len(snap.Runs) != 1 {
		b.note("%s store has %d runs, want 1", l.kind, len(snap.Runs))
	}
	for _, run := range snap.Runs {
		r.RunEvents += run.Events
		r.LostEvents += run.LostEvents
		r.DNSLost += run.DNSLost
		r.Finished = run.Finished
	}
	if withReport {
		out, err := exec.Command(b.binary, "report", "--json", "--db", l.db).Output()
		if err != nil {
			return r, fmt.Errorf("egress-learn report --json: %w", err)
		}
		var rows []struct {
			Hits uint64 `json:"hits"`
		}
		if err := json.Unmarshal(out, &rows); err != nil {
			return r, fmt.Errorf("parse report --json: %w", err)
		}
		r.ReportHits = 0
		for _, row := range rows {
			r.ReportHits += int64(row.Hits)
		}
	}
	return r, nil
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// ---------------------------------------------------------------------------
// RSS.

const udpBasePort = 10000

func (b *bench) rss(o runOptions) (*rssResult, error) {
	ports := o.udpFlows / len(udpAddrs)
	r := &rssResult{Flows: ports * len(udpAddrs)}
	kind, name, env := b.rssLearner()
	l, err := b.startLearner(kind, name, env...)
	if err != nil {
		return nil, err
	}
	sampler := sampleMemory(l.cmd.Process.Pid, 50*time.Millisecond)
	sampling := true
	flushes := watchFlushes(l.db, b.watchEvery)
	defer flushes.close()
	defer func() {
		if sampling {
			sampler.finish()
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			l.kill()
		}
	}()
	sent, u, err := b.rssSend(o, r)
	if err != nil {
		return r, err
	}
	mem, err := b.rssFlushes(r, l, flushes, sent, u.Sent)
	if err != nil {
		return r, err
	}
	sampling = false
	r.Sampled = sampler.finish()
	r.AtFlush = mem
	r.PeakMiB, r.RSSMiB = mem.HWM, mem.RSS
	if fi, err := os.Stat(l.db); err == nil {
		r.DBFileMiB = float64(fi.Size()) / (1 << 20)
	}
	benchutil.Logf("rss: after a flush (%.1fs after the last datagram): VmHWM %.1f MiB, VmRSS %.1f MiB (anon %.1f, file %.1f, shmem %.1f); sampled maxima: anon %.1f, file %.1f, shmem %.1f; db file %.1f MiB",
		r.FlushWaitSecs, mem.HWM, mem.RSS, mem.Anon, mem.File, mem.Shmem, r.Sampled.Anon, r.Sampled.File, r.Sampled.Shmem, r.DBFileMiB)

	stopped = true
	// VmHWM read until the process is gone (the last 10 ms aside): the
	// peak of the stop and the last flush. getrusage's max RSS at exit
	// counts the bench's own RSS too (the child shares its address space
	// until it execs).
	stopSampler := sampleMemory(l.cmd.Process.Pid, 10*time.Millisecond)
	lr, err := b.stopLearner(l, false)
	r.PeakStopMiB = stopSampler.finish().HWM
	if lr != nil {
		r.Learner = *lr
	}
	if err != nil {
		return r, err
	}
	if err := r.countStored(l.db, ports); err != nil {
		return r, err
	}
	r.MaxRSSExitMiB = lr.MaxRSSMiB
	if lr.MapFull != nil {
		benchutil.Logf("rss: kernel stats of the learn.Run child: %d attempts recorded one by one because the flow map was full", *lr.MapFull)
	}
	if data, err := os.ReadFile(l.logPath); err == nil {
		r.GoHeapPeakMB, r.GoHeapLiveMB, r.GCs = peakGoHeap(string(data))
		benchutil.Logf("rss: Go heap (gctrace): peak %.0f MB, largest live heap %.0f MB over %d collections", r.GoHeapPeakMB, r.GoHeapLiveMB, r.GCs)
	}
	benchutil.Logf("rss: stored %d flows (%d matching), %d hits (%d matching), lost %d, dns lost %d, learner cpu %.2fs, max rss at exit %.1f MiB (VmHWM until the exit %.1f MiB), stop %.2fs",
		r.StoredFlows, r.MatchingFlows, r.AllHits, r.Hits, lr.LostEvents, lr.DNSLost, lr.CPUSeconds, lr.MaxRSSMiB, r.PeakStopMiB, lr.StopSeconds)
	b.rssNotes(r, uint64(r.Flows*o.udpPerFlow), lr)
	return r, nil
}

// rssLearner is the learner the RSS phase measures: the egress-learn
// binary, or learn.Run in a child of the bench when profiling.
func (b *bench) rssLearner() (kind int, name string, env []string) {
	// gctrace=1 makes the Go runtime log the heap size at every collection
	// to the learner's log; it costs nothing measurable.
	kind, env = learnerBinary, []string{"GODEBUG=gctrace=1"}
	if b.rssProfile != "" {
		kind, env = learnerChild, append(env, "EGB_CPUPROFILE="+b.rssProfile)
	}
	if p := os.Getenv("EGB_HEAPPROFILE"); p != "" {
		kind, env = learnerChild, append(env, "EGB_HEAPPROFILE="+p)
	}
	return kind, "rss", env
}

// rssSend sends the RSS phase's datagrams; sent is when the last left.
func (b *bench) rssSend(o runOptions, r *rssResult) (sent time.Time, u udpResult, err error) {
	benchutil.Logf("rss: sending %d datagrams over %d flows", r.Flows*o.udpPerFlow, r.Flows)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
	defer cancel()
	cmd := b.clientCmd(ctx, childEnv+"=udp", "EGB_FLOWS="+strconv.Itoa(r.Flows),
		"EGB_PER_FLOW="+strconv.Itoa(o.udpPerFlow), "EGB_BASE_PORT="+strconv.Itoa(udpBasePort))
	if _, err := runChild(cmd, &u); err != nil {
		return sent, u, err
	}
	sent = time.Now()
	r.Datagrams, r.SendErrors, r.SendSeconds = u.Sent, u.Errors, u.Seconds
	benchutil.Logf("rss: sent %d datagrams in %.2fs (%.0f/s), %d errors", u.Sent, u.Seconds, float64(u.Sent)/u.Seconds, u.Errors)
	if u.Errors > 0 {
		b.note("rss: %d sendto errors (first: %s)", u.Errors, u.FirstErr)
	}
	return sent, u, nil
}

// rssFlushes waits for a flush that happened after the drain following
// the last datagram (drains run every second), reads the learner's
// memory then, and waits (a while) until a flush holds every datagram.
func (b *bench) rssFlushes(r *rssResult, l *learnerProc, flushes *flushWatcher, sent time.Time, datagrams uint64) (procMem, error) {
	first, err := flushes.wait(b.ctx, l, func(f flushPoint) bool { return f.End.After(sent.Add(1500 * time.Millisecond)) }, b.flush+30*time.Second)
	if err != nil {
		return procMem{}, fmt.Errorf("rss: wait for a flush: %w", err)
	}
	r.HitsBeforeStop = first.Events
	r.FlushWaitSecs = time.Since(sent).Seconds()
	mem, err := procMemory(l.cmd.Process.Pid)
	if err != nil {
		return mem, err
	}
	if all, err := flushes.wait(b.ctx, l, func(f flushPoint) bool { return f.Events >= datagrams }, 4*b.flush+10*time.Second); err == nil {
		r.AllCountedSecs = all.Seen.Sub(sent).Seconds()
		r.AllCountedRunEnd = all.End.Sub(sent).Seconds()
	} else {
		r.AllCountedSecs = -1
		b.note("rss: no flush held all %d datagrams within %s: %v", datagrams, 4*b.flush+10*time.Second, err)
	}
	if m2, err := procMemory(l.cmd.Process.Pid); err == nil {
		r.AtAllCounted = m2
	}
	flushes.close()
	r.Flushes = flushes.points()
	for _, f := range r.Flushes {
		r.MaxFlushSecs = max(r.MaxFlushSecs, f.Seen.Sub(f.End).Seconds())
	}
	for _, f := range r.Flushes {
		benchutil.Logf("rss: flush seen %6.2fs after start: run end %+6.2fs, events %7d (vs the last datagram: %+.2fs)",
			f.Seen.Sub(l.started).Seconds(), f.End.Sub(l.started).Seconds(), f.Events, f.End.Sub(sent).Seconds())
	}
	return mem, nil
}

// countStored counts what the store holds: every flow and hit, and those
// of the datagrams sent.
func (r *rssResult) countStored(db string, ports int) error {
	stf, err := store.Open(db, store.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	flows, err := stf.Flows()
	if err != nil {
		return err
	}
	r.StoredFlows = len(flows)
	for _, f := range flows {
		r.AllHits += f.Hits
		if f.Proto == unix.IPPROTO_UDP && f.Port >= udpBasePort && int(f.Port) < udpBasePort+ports &&
			f.IP.Is4() && slices.Contains(udpAddrs, f.IP.As4()) {
			r.MatchingFlows++
			r.Hits += f.Hits
		}
	}
	return nil
}

// rssNotes notes what the RSS phase found wrong: want hits were sent.
func (b *bench) rssNotes(r *rssResult, want uint64, lr *learnerRun) {
	if r.MatchingFlows != r.Flows {
		b.note("rss: %d flows stored, want %d", r.MatchingFlows, r.Flows)
	}
	if r.Hits != r.Datagrams || r.Hits != want {
		b.note("rss: %d hits stored, %d datagrams sent, %d wanted", r.Hits, r.Datagrams, want)
	}
	if r.HitsBeforeStop != r.Datagrams {
		b.note("rss: the first flush begun over 1.5s after the last datagram held %d events of %d; all were in the store %.1fs after the last datagram",
			r.HitsBeforeStop, r.Datagrams, r.AllCountedSecs)
	}
	if r.MaxFlushSecs > 2 {
		b.note("rss: a flush took up to %.1fs from its start (run end time) until the bench saw it committed (it runs beside the drain loop)", r.MaxFlushSecs)
	}
	// The goals: 100 MiB at 100,000 flows (issue 1), 400 MiB at 1,000,000
	// (issue 15).
	goal := 100.0
	if r.Flows > 100000 {
		goal = 400
	}
	if peak := max(r.PeakMiB, r.MaxRSSExitMiB, r.PeakStopMiB); peak >= goal {
		b.note("rss: peak %.1f MiB (to the exit %.1f MiB) is over the %.0f MiB goal at %d flows", r.PeakMiB, max(r.MaxRSSExitMiB, r.PeakStopMiB), goal, r.Flows)
	}
	if lr.LostEvents > 0 || lr.DNSLost > 0 {
		b.note("rss: lost %d events, %d DNS answers", lr.LostEvents, lr.DNSLost)
	}
}

// flushPoint is one flush of a learner, as its run record shows it.
type flushPoint struct {
	Seen   time.Time `json:"seen"` // when the bench first saw it
	End    time.Time `json:"end"`  // store.Run.End: when the flush began
	Events uint64    `json:"events"`
}

// flushWatcher polls a learner's store for new flushes.
type flushWatcher struct {
	mu   sync.Mutex
	pts  []flushPoint
	err  error
	new  chan struct{} // closed and replaced at each new point
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func watchFlushes(db string, every time.Duration) *flushWatcher {
	w := &flushWatcher{new: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var st *store.Store
		var err error
		for {
			if _, serr := os.Stat(db); serr == nil {
				if st == nil {
					st, err = store.Open(db, store.Options{LockTimeout: 30 * time.Second})
				}
				var runs []store.Run
				if err == nil {
					runs, err = st.Runs()
				}
				if err != nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
					return
				}
				if len(runs) > 0 {
					run := runs[len(runs)-1]
					w.mu.Lock()
					if n := len(w.pts); n == 0 || !w.pts[n-1].End.Equal(run.End) {
						w.pts = append(w.pts, flushPoint{Seen: time.Now(), End: run.End, Events: run.Events})
						close(w.new)
						w.new = make(chan struct{})
					}
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return w
}

// wait returns the first flush (seen so far or later) that ok accepts.
func (w *flushWatcher) wait(ctx context.Context, l *learnerProc, ok func(flushPoint) bool, timeout time.Duration) (flushPoint, error) {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, p := range w.pts {
			if ok(p) {
				w.mu.Unlock()
				return p, nil
			}
		}
		err, next := w.err, w.new
		w.mu.Unlock()
		if err != nil {
			return flushPoint{}, err
		}
		select {
		case <-next:
		case <-deadline:
			return flushPoint{}, fmt.Errorf("timed out after %s", timeout)
		case <-l.done:
			return flushPoint{}, fmt.Errorf("learner exited early: %s", l.logTail())
		case <-ctx.Done():
			return flushPoint{}, ctx.Err()
		}
	}
}

func (w *flushWatcher) close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (w *flushWatcher) points() []flushPoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.pts)
}

// procMem is a process's memory from /proc/PID/status, in MiB.
type procMem struct {
	HWM   float64 `json:"vm_hwm_mib"`
	RSS   float64 `json:"vm_rss_mib"`
	Anon  float64 `json:"rss_anon_mib"`
	File  float64 `json:"rss_file_mib"`
	Shmem float64 `json:"rss_shmem_mib"`
}

func procMemory(pid int) (procMem, error) {
	var m procMem
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmHWM:":
			m.HWM = kb / 1024
		case "VmRSS:":
			m.RSS = kb / 1024
		case "RssAnon:":
			m.Anon = kb / 1024
		case "RssFile:":
			m.File = kb / 1024
		case "RssShmem:":
			m.Shmem = kb / 1024
		}
	}
	return m, sc.Err()
}

// memSampler follows a process's memory until stopped, keeping the
// largest value of each figure.
type memSampler struct {
	mu   sync.Mutex
	max  procMem
	stop chan struct{}
	done chan struct{}
}

func sampleMemory(pid int, every time.Duration) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if cur, err := procMemory(pid); err == nil {
				m.mu.Lock()
				m.max.HWM = max(m.max.HWM, cur.HWM)
				m.max.RSS = max(m.max.RSS, cur.RSS)
				m.max.Anon = max(m.max.Anon, cur.Anon)
				m.max.File = max(m.max.File, cur.File)
				m.max.Shmem = max(m.max.Shmem, cur.Shmem)
				m.mu.Unlock()
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memSampler) finish() procMem {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max
}

// gcHeapRe matches the heap figures of a GODEBUG=gctrace=1 line:
// heap at GC start -> at GC end -> live heap, in MB.
var gcHeapRe = regexp.MustCompile(`(\d+)->(\d+)->(\d+) MB`)

// peakGoHeap returns the largest heap a gctrace log shows, and the number
// of collections.
func peakGoHeap(log string) (peakMB, liveMB float64, gcs int) {
	for _, m := range gcHeapRe.FindAllStringSubmatch(log, -1) {
		gcs++
		a, _ := strconv.ParseFloat(m[1], 64)
		b, _ := strconv.ParseFloat(m[2], 64)
		c, _ := strconv.ParseFloat(m[3], 64)
		peakMB = max(peakMB, a, b)
		liveMB = max(liveMB, c)
	}
	return peakMB, liveMB, gcs
}

// ---------------------------------------------------------------------------
// Output.

func printSummary(w io.Writer, o *output) {
	printLoads(w, o)
	printProgStats(w, o)
	if r := o.RSS; r != nil {
		fmt.Fprintf(w, "RSS after %d events over %d flows: peak %.1f MiB (rss %.1f MiB; to the exit: VmHWM %.1f MiB, getrusage %.1f MiB), flows %d, hits %d, lost %d, dns lost %d\n",
			r.Datagrams, r.Flows, r.PeakMiB, r.RSSMiB, r.PeakStopMiB, r.MaxRSSExitMiB, r.MatchingFlows, r.Hits, r.Learner.LostEvents, r.Learner.DNSLost)
		fmt.Fprintf(w, "  at the flush: anon %.1f MiB, file %.1f MiB, shmem %.1f MiB (sampled maxima anon %.1f, file %.1f, shmem %.1f); Go heap peak %.0f MB, live %.0f MB; db file %.1f MiB\n",
			r.AtFlush.Anon, r.AtFlush.File, r.AtFlush.Shmem, r.Sampled.Anon, r.Sampled.File, r.Sampled.Shmem, r.GoHeapPeakMB, r.GoHeapLiveMB, r.DBFileMiB)
		fmt.Fprintf(w, "  sent in %.2fs (%.0f/s), learner cpu %.2fs, longest flush %.1fs, all events stored %.1fs after the last datagram, stop %.2fs\n",
			r.SendSeconds, float64(r.Datagrams)/r.SendSeconds, r.Learner.CPUSeconds, r.MaxFlushSecs, r.AllCountedSecs, r.Learner.StopSeconds)
	}
	if len(o.Notes) > 0 {
		fmt.Fprintln(w, "notes:")
		for _, n := range o.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
}
