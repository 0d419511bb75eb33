//go:build linux

// Command enforcebench measures what the enforce table costs: the rate of
// new outbound UDP packets through the output chain with no table, with
// our table holding 10 and 100,000 allow-set entries, and, for comparison,
// with 10,000 entries as one rule each; and the control-plane time of
// plan.Build plus nft.Netlink.Apply for a 100,000-flow baseline. It prints
// figures and ratios; it is not a test.
//
// Run it as root from the module root:
//
//	go run ./bench/enforcebench [-rounds 3] [-duration 3s] [-json]
//
// Everything runs in uniquely named network namespaces: per datapath case
// a client and a server namespace joined by a veth pair
// (egbe-XXXXXXXX-ac/-as for the first case, -bc/-bs, ...), and one for the
// control plane (egbe-XXXXXXXX-p); all are removed at the end, also on
// SIGINT/SIGTERM/SIGHUP or failure. See README.md for the method. No table is ever installed in the
// host's own network namespace: every nft.Target and nft call names one
// of those namespaces, and the code refuses any other target.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// childEnv selects the sender mode when the program re-executes itself;
// childCfgEnv carries its configuration as JSON.
const (
	childEnv    = "EGBE_CHILD"
	childCfgEnv = "EGBE_CFG"
)

// nsPrefix starts the name of every namespace this program creates; no
// table or nft command is ever aimed at a namespace without it.
const nsPrefix = "egbe-"

// Addresses of the veth pair; the server port range holds the benchmark's
// flows.
var (
	serverIP = netip.MustParseAddr("10.77.0.1")
	clientIP = netip.MustParseAddr("10.77.0.2")
)

const (
	serverDev = "veth0"
	clientDev = "veth1"
	tableName = "egress"
	checkName = "egbe_check"
)

func main() {
	if os.Getenv(childEnv) == "send" {
		os.Exit(childSend())
	}
	os.Exit(benchMain())
}

// ---------------------------------------------------------------------------
// The sender child.

// sendConfig is what the sender child does.
type sendConfig struct {
	Netns    string        `json:"netns"` // namespace file it must be in
	UID      uint32        `json:"uid"`
	Dest     [4]byte       `json:"dest"`
	Ports    []int         `json:"ports"`
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	Payload  int           `json:"payload"`
}

// sendResult is what the sender child prints.
type sendResult struct {
	WarmupSent uint64  `json:"warmup_sent"`
	Sent       uint64  `json:"sent"`   // in the measured phase, successful sendto calls
	Errors     uint64  `json:"errors"` // failed sendto calls, both phases
	FirstErr   string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`     // of the measured phase
	CPUSeconds float64 `json:"cpu_seconds"` // user+system time of the measured phase (getrusage)
	SysSeconds float64 `json:"sys_seconds"`
	UID        int     `json:"uid"`
}

// childSend runs as root inside the client namespace (nsenter), drops to
// the configured uid and gid with no supplementary groups, opens one
// unconnected UDP socket (its sk_uid, what `meta skuid` matches, is taken
// at creation, after the switch) and sends small datagrams with sendto(),
// cycling over the configured destination ports.
func childSend() int {
	var cfg sendConfig
	if err := json.Unmarshal([]byte(os.Getenv(childCfgEnv)), &cfg); err != nil || len(cfg.Ports) == 0 {
		fmt.Fprintln(os.Stderr, "sender: bad configuration:", err)
		return 2
	}
	if err := becomeSender(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		return 2
	}
	runtime.LockOSThread()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sender: socket:", err)
		return 1
	}
	defer unix.Close(fd)
	addrs := make([]unix.RawSockaddrInet4, len(cfg.Ports))
	for i, p := range cfg.Ports {
		addrs[i].Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&addrs[i].Port))[:], uint16(p))
		addrs[i].Addr = cfg.Dest
	}
	payload := make([]byte, max(cfg.Payload, 1))
	out := sendResult{UID: os.Getuid()}
	next := 0
	// phase sends until the deadline, looking at the clock every 16 sends.
	phase := func(d time.Duration) (sent uint64, took time.Duration) {
		start := time.Now()
		deadline := start.Add(d)
		for {
			for range 16 {
				sa := &addrs[next]
				if next++; next == len(addrs) {
					next = 0
				}
				_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&payload[0])), uintptr(len(payload)),
					0, uintptr(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4)
				if e != 0 {
					out.Errors++
					if out.FirstErr == "" {
						out.FirstErr = e.Error()
					}
					continue
				}
				sent++
			}
			if now := time.Now(); !now.Before(deadline) {
				return sent, now.Sub(start)
			}
		}
	}
	if cfg.Warmup > 0 {
		out.WarmupSent, _ = phase(cfg.Warmup)
	}
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	sent, took := phase(cfg.Duration)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	out.Sent, out.Seconds = sent, took.Seconds()
	user := tvSeconds(ru1.Utime) - tvSeconds(ru0.Utime)
	out.SysSeconds = tvSeconds(ru1.Stime) - tvSeconds(ru0.Stime)
	out.CPUSeconds = user + out.SysSeconds
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

// becomeSender checks that nsenter put the process where cfg says (never
// send from the host) and takes the sender's uid and gid.
func becomeSender(cfg sendConfig) error {
	var self, want unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return err
	}
	if err := unix.Stat(cfg.Netns, &want); err != nil {
		return err
	}
	if self.Ino != want.Ino || self.Dev != want.Dev {
		return fmt.Errorf("not in network namespace %s", cfg.Netns)
	}
	// syscall's Setuid and friends apply to every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(cfg.UID)); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(int(cfg.UID)); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}

func tvSeconds(tv unix.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// ---------------------------------------------------------------------------
// Cleanup.

// ---------------------------------------------------------------------------
// Namespaces.

// target is an enforce target for one of our namespaces; it refuses any
// other, so no table can land in the host's namespace.
func target(ns string) nft.Target {
	if !strings.HasPrefix(ns, nsPrefix) || strings.Contains(ns, "/") {
		panic("enforcebench: refusing to act outside its own namespaces: " + strconv.Quote(ns))
	}
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		panic("enforcebench: namespace " + ns + " is gone: " + err.Error())
	}
	return nft.Target{Netns: ns}
}

func run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// nsRun runs a command inside one of our namespaces.
func nsRun(ns string, stdin []byte, args ...string) (string, error) {
	target(ns) // refuse anything else
	var out bytes.Buffer
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("in %s: %s: %w: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// newNetns creates a namespace with loopback up and registers its removal.
func newNetns(cl *benchutil.Cleaner, name string) error {
	if !strings.HasPrefix(name, nsPrefix) {
		return fmt.Errorf("namespace name %q lacks prefix %q", name, nsPrefix)
	}
	return cl.Netns(name)
}

// linkStats reads a device's packet counters inside a namespace.
func linkStats(ns, dev string) (rx, tx uint64, err error) {
	target(ns)
	out, err := run("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		return 0, 0, err
	}
	var links []struct {
		Stats64 struct {
			RX struct{ Packets uint64 } `json:"rx"`
			TX struct{ Packets uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("parse ip -s -j link of %s in %s: %v", dev, ns, err)
	}
	return links[0].Stats64.RX.Packets, links[0].Stats64.TX.Packets, nil
}

// ---------------------------------------------------------------------------
// Synthetic baselines.

// uidPool are the users of the synthetic flows: root, www-data, system
// users, regular users. The sender's uid (default 1000) is one of them.
var uidPool = func() []uint32 {
	u := []uint32{0, 33, 998, 999}
	for i := range uint32(18) {
		u = append(u, 100+i, 1000+i)
	}
	return u
}()

var commonTCP = []uint16{443, 443, 443, 443, 443, 443, 80, 80, 80, 22, 8080, 8443, 5432, 3306, 6379, 9200, 25, 587, 993, 5222, 9092, 27017, 11211, 2379}

var processPool = [][]string{
	{"curl"}, {"python3"}, {"python3", "pip"}, {"java"}, {"node"}, {"apt", "http"}, {"firefox-esr"},
	{"postgres"}, {"nginx"}, {"ssh"}, {"git", "git-remote-http"}, {"dockerd"}, {"systemd-resolve"}, {"chronyd"},
}

// ntpServers is a small set of NTP servers for the control-plane baseline:
// Build turns every distinct UDP/123 destination into a rule of its own.
var ntpServers = []netip.Addr{
	netip.MustParseAddr("162.159.200.1"), netip.MustParseAddr("162.159.200.123"),
	netip.MustParseAddr("185.125.190.56"), netip.MustParseAddr("185.125.190.57"),
	netip.MustParseAddr("2620:2d:4000:1::40"), netip.MustParseAddr("2620:2d:4000:1::41"),
}

// synthFlows makes n distinct flows as a learner would store them: a few
// dozen users, random public destinations (never 10.0.0.0/8, so never the
// benchmark's flows), mostly TCP 443/80, some UDP 53 and QUIC, a share of
// IPv6, one to three hostnames and one or two process names each. With
// ntp false no flow goes to UDP 123 (each NTP address would become a rule).
func synthFlows(n int, v6share float64, ntp bool, seed uint64) []store.Flow {
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	now := time.Now()
	seen := make(map[store.FlowKey]struct{}, n)
	flows := make([]store.Flow, 0, n)
	for len(flows) < n {
		var k store.FlowKey
		k.UID = uidPool[rng.IntN(len(uidPool))]
		if rng.Float64() < v6share {
			var a [16]byte
			binary.BigEndian.PutUint64(a[0:8], 0x20010db8<<32|rng.Uint64()&0xffffffff)
			binary.BigEndian.PutUint64(a[8:16], rng.Uint64())
			k.IP = netip.AddrFrom16(a)
		} else {
			for {
				v := rng.Uint32()
				if b := v >> 24; b == 0 || b == 10 || b == 127 || b >= 224 {
					continue
				}
				var a [4]byte
				binary.BigEndian.PutUint32(a[:], v)
				k.IP = netip.AddrFrom4(a)
				break
			}
		}
		switch r := rng.Float64(); {
		case r < 0.06:
			k.Proto, k.Port = plan.ProtoUDP, 53
		case r < 0.10:
			k.Proto, k.Port = plan.ProtoUDP, 443
		case r < 0.12:
			k.Proto, k.Port = plan.ProtoUDP, uint16(1024+rng.IntN(64512))
		case r < 0.13 && ntp:
			k.Proto, k.Port = plan.ProtoUDP, 123
			k.IP = ntpServers[rng.IntN(len(ntpServers))]
		case r < 0.80:
			k.Proto, k.Port = plan.ProtoTCP, commonTCP[rng.IntN(len(commonTCP))]
		default:
			k.Proto, k.Port = plan.ProtoTCP, uint16(1024+rng.IntN(64512))
		}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		f := store.Flow{FlowKey: k, Hits: 1 + uint64(rng.IntN(5000))}
		f.LastSeen = now.Add(-time.Duration(rng.IntN(30*24)) * time.Hour)
		f.FirstSeen = f.LastSeen.Add(-time.Duration(rng.IntN(60*24)) * time.Hour)
		for range 1 + rng.IntN(3) {
			f.Hostnames = append(f.Hostnames, fmt.Sprintf("svc%d.r%d.cdn%d.example.net", rng.IntN(100000), rng.IntN(20), rng.IntN(500)))
		}
		f.Processes = processPool[rng.IntN(len(processPool))]
		flows = append(flows, f)
	}
	return flows
}

// benchFlows are the flows the sender makes: its uid to the server on the
// benchmark ports, UDP.
func benchFlows(uid uint32, ports []int) []store.Flow {
	now := time.Now()
	var out []store.Flow
	for _, p := range ports {
		out = append(out, store.Flow{
			FlowKey:   store.FlowKey{UID: uid, Proto: plan.ProtoUDP, IP: serverIP, Port: uint16(p)},
			Hits:      100,
			FirstSeen: now.Add(-time.Hour),
			LastSeen:  now,
			Hostnames: []string{"bench.server.lab"},
			Processes: []string{"enforcebench"},
		})
	}
	return out
}

// asAllows turns flows into always_allow entries: one rule each, in order.
func asAllows(flows []store.Flow) []plan.Allow {
	out := make([]plan.Allow, len(flows))
	for i, f := range flows {
		uid := f.UID
		out[i] = plan.Allow{Proto: f.Proto, Dest: netip.PrefixFrom(f.IP, f.IP.BitLen()), Port: f.Port, UID: &uid,
			Reason: fmt.Sprintf("flow %d", i+1)}
	}
	return out
}

// ---------------------------------------------------------------------------
// Results.

type envInfo struct {
	Kernel   string  `json:"kernel"`
	CPUs     int     `json:"cpus"`
	Mode     string  `json:"mode"`
	UID      uint32  `json:"uid"`
	Flows    string  `json:"flows"`
	Rounds   int     `json:"rounds"`
	Duration string  `json:"duration"`
	Warmup   string  `json:"warmup"`
	Payload  int     `json:"payload_bytes"`
	Netns    string  `json:"netns_prefix"`
	Seconds  float64 `json:"total_seconds"`
}

type checkResult struct {
	Case        string  `json:"case"`
	Sent        uint64  `json:"sent"`
	CtNew       uint64  `json:"ct_state_new"`
	CtEstab     uint64  `json:"ct_state_established"`
	ServerRx    uint64  `json:"server_rx"`
	DefaultPkts uint64  `json:"default_counter"`
	ReadMS      float64 `json:"read_status_ms,omitempty"`
	Errors      uint64  `json:"send_errors"`
	FirstErr    string  `json:"first_error,omitempty"`
}

type roundResult struct {
	Round       int     `json:"round"`
	PPS         float64 `json:"pkt_per_sec"`    // wall clock: packets / seconds of the measured phase
	CPUUS       float64 `json:"cpu_us_per_pkt"` // sender CPU time (user+sys, incl. in-context softirq) per packet
	SysShare    float64 `json:"sys_share"`      // of that CPU time, the system part
	Sent        uint64  `json:"sent"`           // warmup + measured
	Errors      uint64  `json:"send_errors"`
	FirstErr    string  `json:"first_error,omitempty"`
	ServerRx    uint64  `json:"server_rx"`       // veth rx in the server namespace over the run
	DefaultPkts *uint64 `json:"default_counter"` // what the default rule counted during the run
}

type caseResult struct {
	Name     string `json:"name"`
	Entries  int    `json:"set_entries"`
	Rules    int    `json:"chain_rules"`
	BenchPos string `json:"bench_flow_position,omitempty"`
	// ApplyMS is nft.Netlink.Apply of the case's table (once, before the
	// rounds), verify included; ApplyTookMS its ApplyResult.Took.
	ApplyMS     float64       `json:"apply_ms,omitempty"`
	ApplyTookMS float64       `json:"apply_took_ms,omitempty"`
	Rounds      []roundResult `json:"rounds"`
	MedianPPS   float64       `json:"median_pkt_per_sec"`
	USPerPkt    float64       `json:"us_per_pkt"` // 1e6 / median_pkt_per_sec
	AddedUS     float64       `json:"added_us_per_pkt_vs_no_table"`
	RatioTo10   float64       `json:"rate_ratio_to_set_10,omitempty"`
	// The same from the sender's CPU time, which other load on the
	// machine disturbs less than the wall-clock rate.
	MedianCPUUS  float64 `json:"median_cpu_us_per_pkt"`
	AddedCPUUS   float64 `json:"added_cpu_us_per_pkt_vs_no_table"`
	CPURatioTo10 float64 `json:"cpu_rate_ratio_to_set_10,omitempty"` // cpu_us(set 10) / cpu_us(case)
	// Median over rounds of the ratio within each round: the cases of a
	// round run back to back, so load from elsewhere on the machine
	// touches both sides of a ratio alike.
	PairedRatio    float64 `json:"paired_rate_ratio_to_set_10,omitempty"`
	PairedCPURatio float64 `json:"paired_cpu_rate_ratio_to_set_10,omitempty"`
}

type cpRep struct {
	Rep      int     `json:"rep"`
	Replace  bool    `json:"replace"`
	BuildMS  float64 `json:"build_ms"`
	ApplyMS  float64 `json:"apply_ms"`  // nft.Netlink.Apply wall time
	FlushMS  float64 `json:"flush_ms"`  // ApplyResult.Took: connect, encode, flush
	VerifyMS float64 `json:"verify_ms"` // the rest: the read-back
	ReadMS   float64 `json:"read_status_ms"`
	TotalMS  float64 `json:"total_ms"`
}

type cpResult struct {
	Flows      int     `json:"flows"`
	IPv4       int     `json:"ipv4_elements"`
	IPv6       int     `json:"ipv6_elements"`
	Rules      int     `json:"chain_rules"`
	TextBytes  int     `json:"nft_text_bytes"`
	Reps       []cpRep `json:"reps"`
	MinBuild   float64 `json:"min_build_ms"`
	MedBuild   float64 `json:"median_build_ms"`
	MinApply   float64 `json:"min_apply_ms"`
	MedApply   float64 `json:"median_apply_ms"`
	MedFlush   float64 `json:"median_flush_ms"`
	MedVerify  float64 `json:"median_verify_ms"`
	MedRead    float64 `json:"median_read_status_ms"`
	MinTotal   float64 `json:"min_total_ms"`
	MedTotal   float64 `json:"median_total_ms"`
	NftTextMS  float64 `json:"nft_f_text_ms,omitempty"`
	NftTextErr string  `json:"nft_f_text_error,omitempty"`
	GoalMS     float64 `json:"goal_ms"`
}

// scalePoint is one size of the -read-scaling experiment.
type scalePoint struct {
	Elements     int     `json:"elements"`
	Comments     bool    `json:"comments"`
	FlushMS      float64 `json:"flush_ms"`
	VerifyMS     float64 `json:"verify_ms"`
	ReadMS       float64 `json:"read_status_ms"`
	ReadUSPerEl  float64 `json:"read_us_per_element"`
	ReadVsHalfNo float64 `json:"read_ratio_to_half_size,omitempty"`
}

type output struct {
	Env          envInfo       `json:"env"`
	Checks       []checkResult `json:"checks,omitempty"`
	Negative     *checkResult  `json:"negative_control,omitempty"`
	Datapath     []caseResult  `json:"datapath,omitempty"`
	ControlPlane *cpResult     `json:"control_plane,omitempty"`
	ReadScaling  []scalePoint  `json:"read_scaling,omitempty"`
	Notes        []string      `json:"notes,omitempty"`
}

// ---------------------------------------------------------------------------
// The bench.

type options struct {
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	mode       plan.Mode
	uid        uint32
	basePort   int
	nPorts     int
	small      int
	large      int
	rules      int
	payload    int
	cpFlows    int
	cpReps     int
	cpV6       float64
	noData     bool
	noCP       bool
	noChecks   bool
	follow     bool
	tenth      bool
	nftText    bool
	cpuprofile string
	jsonOut    bool
	scaling    []int
}

type bench struct {
	o       options
	cl      *benchutil.Cleaner
	self    string
	base    string // namespace name prefix of this run
	cp      string // the control-plane namespace
	ports   []int
	res     *output
	mu      sync.Mutex
	child   *exec.Cmd
	stopped bool
}

func (b *bench) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	b.res.Notes = append(b.res.Notes, s)
	benchutil.Logf("NOTE: %s", s)
}

func benchMain() int {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := benchutil.Require("enforcebench", "it creates network namespaces and nftables tables in them", "ip", "nsenter", "nft"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	cl := &benchutil.Cleaner{}
	defer cl.Run()
	base := nsPrefix + benchutil.RandomID()
	b := &bench{o: o, cl: cl, self: self, base: base, cp: base + "-p", res: &output{}}
	for p := o.basePort; p < o.basePort+o.nPorts; p++ {
		b.ports = append(b.ports, p)
	}
	b.stopOnSignal()

	if stale, _ := filepath.Glob("/run/netns/" + nsPrefix + "*"); len(stale) > 0 {
		benchutil.Logf("note: namespaces from another run exist (left alone): %s", strings.Join(stale, " "))
	}
	start := time.Now()
	b.res.Env = envInfo{
		Kernel: benchutil.KernelRelease(), CPUs: runtime.NumCPU(), Mode: string(o.mode), UID: o.uid,
		Flows:  fmt.Sprintf("udp %s:%d-%d from %s, one socket, sendto cycling over %d ports", serverIP, o.basePort, o.basePort+o.nPorts-1, clientIP, o.nPorts),
		Rounds: o.rounds, Duration: o.duration.String(), Warmup: o.warmup.String(), Payload: o.payload, Netns: base,
	}
	if err := b.run(); err != nil {
		benchutil.Logf("FAILED: %v", err)
		b.stopChild()
		cl.Run()
		return 1
	}
	b.res.Env.Seconds = time.Since(start).Seconds()
	cl.Run()
	if left, _ := filepath.Glob("/run/netns/" + base + "*"); len(left) > 0 {
		benchutil.Logf("WARNING: namespaces left behind: %v", left)
	}
	if o.jsonOut {
		if err := benchutil.WriteJSON(os.Stdout, b.res); err != nil {
			return 1
		}
		return 0
	}
	printSummary(os.Stdout, b.res, o)
	return 0
}

// stopOnSignal stops the bench and removes its namespaces on SIGINT,
// SIGTERM or SIGHUP.
func (b *bench) stopOnSignal() {
	b.cl.OnSignal(func(s os.Signal) {
		benchutil.Logf("got %v: stopping, removing namespaces", s)
		b.stopChild()
	})
}

// parseFlags reads the command line into the bench's options.
func parseFlags() (options, error) {
	var o options
	var mode string
	var uid uint
	flag.IntVar(&o.rounds, "rounds", 3, "datapath rounds (each runs every case once)")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measured send time per case and round")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured send time before each measurement")
	flag.StringVar(&mode, "mode", "enforce", "table mode: enforce (policy drop) or audit")
	flag.UintVar(&uid, "uid", 1000, "uid the sender runs as (its flows are in the allow-list)")
	flag.IntVar(&o.basePort, "port", 20000, "first UDP destination port of the benchmark's flows")
	flag.IntVar(&o.nPorts, "ports", 10, "how many destination ports the sender cycles over (= the small set)")
	flag.IntVar(&o.large, "entries", 100000, "allow-set entries of the large case")
	flag.IntVar(&o.rules, "rules", 10000, "entries of the one-rule-each case")
	flag.IntVar(&o.payload, "payload", 16, "UDP payload bytes")
	flag.IntVar(&o.cpFlows, "cp-flows", 100000, "flows of the control-plane baseline")
	flag.IntVar(&o.cpReps, "cp-reps", 5, "control-plane repetitions")
	flag.Float64Var(&o.cpV6, "cp-v6", 0.1, "share of IPv6 flows in the control-plane baseline")
	flag.BoolVar(&o.noData, "no-datapath", false, "skip the datapath measurement")
	flag.BoolVar(&o.noCP, "no-control", false, "skip the control-plane measurement")
	flag.BoolVar(&o.noChecks, "no-checks", false, "skip the ct-state and negative-control checks")
	flag.BoolVar(&o.tenth, "tenth", false, "also measure a set of a tenth of -entries (the 1M/100k scaling case; paired with the large set)")
	flag.BoolVar(&o.follow, "follow", true, "also measure the small table with the DNS follower's eBPF programs on the sender's cgroup")
	flag.BoolVar(&o.nftText, "nft-text", false, "also time `nft -f` of the control-plane plan's text")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the control-plane Build+Apply calls to this file")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as JSON instead of the summary")
	scaling := flag.String("read-scaling", "", "comma-separated set sizes (e.g. 12500,25000,50000,100000): time Apply and ReadStatus at each, with and without element comments")
	flag.Parse()
	for _, f := range strings.FieldsFunc(*scaling, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("bad -read-scaling size %q", f)
		}
		o.scaling = append(o.scaling, n)
	}
	m, err := plan.ParseMode(mode)
	if err != nil {
		return o, err
	}
	o.mode, o.uid, o.small = m, uint32(uid), o.nPorts
	if o.rounds < 1 || o.nPorts < 1 || o.large < o.nPorts || o.rules < o.nPorts || o.basePort < 1 || o.basePort+o.nPorts > 65536 {
		return o, errors.New("bad flags: need rounds >= 1, 1 <= ports <= entries, rules; port range inside 1-65535")
	}
	return o, nil
}

func (b *bench) stopChild() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.child != nil && b.child.Process != nil {
		_ = b.child.Process.Kill()
	}
}

func (b *bench) run() error {
	if !b.o.noData {
		if err := b.datapath(); err != nil {
			return fmt.Errorf("datapath: %w", err)
		}
	}
	if !b.o.noCP {
		if err := newNetns(b.cl, b.cp); err != nil {
			return fmt.Errorf("set up namespace: %w", err)
		}
		if err := b.controlPlane(); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
	}
	if len(b.o.scaling) > 0 {
		if _, err := os.Stat("/run/netns/" + b.cp); err != nil {
			if err := newNetns(b.cl, b.cp); err != nil {
				return fmt.Errorf("set up namespace: %w", err)
			}
		}
		if err := b.readScaling(); err != nil {
			return fmt.Errorf("read scaling: %w", err)
		}
	}
	return nil
}

// setupPair creates a client and a server namespace, the veth pair
// between them, a permanent neighbour entry (no ARP during the runs), and
// UDP sockets bound to the benchmark ports in the server namespace (never
// read: datagrams past the receive buffer are dropped there, cheaply, and
// no ICMP port-unreachable comes back).
func (b *bench) setupPair(client, server string) error {
	for _, ns := range []string{server, client} {
		if err := newNetns(b.cl, ns); err != nil {
			return err
		}
	}
	if _, err := run("ip", "-n", server, "link", "add", serverDev, "type", "veth", "peer", "name", clientDev, "netns", client); err != nil {
		return err
	}
	for _, c := range []struct{ ns, dev, ip string }{{server, serverDev, serverIP.String()}, {client, clientDev, clientIP.String()}} {
		if _, err := run("ip", "-n", c.ns, "addr", "add", c.ip+"/24", "dev", c.dev); err != nil {
			return err
		}
		if _, err := run("ip", "-n", c.ns, "link", "set", c.dev, "up"); err != nil {
			return err
		}
	}
	mac, err := linkMAC(server, serverDev)
	if err != nil {
		return err
	}
	if _, err := run("ip", "-n", client, "neigh", "replace", serverIP.String(), "lladdr", mac, "dev", clientDev, "nud", "permanent"); err != nil {
		return err
	}
	var fds []int
	err = lab.InNetns(&lab.Netns{Name: server}, func() error {
		for _, p := range b.ports {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: p, Addr: serverIP.As4()}); err != nil {
				return fmt.Errorf("bind udp %s:%d: %w", serverIP, p, err)
			}
		}
		return nil
	})
	b.cl.Add(func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	})
	return err
}

func linkMAC(ns, dev string) (string, error) {
	out, err := run("ip", "-n", ns, "-j", "link", "show", "dev", dev)
	if err != nil {
		return "", err
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return "", fmt.Errorf("parse ip -j link of %s in %s: %v", dev, ns, err)
	}
	return links[0].Address, nil
}

// send runs the sender child in the case's client namespace.
func (b *bench) send(c *tableCase, ports []int, warmup, d time.Duration) (sendResult, error) {
	var res sendResult
	cfg, _ := json.Marshal(sendConfig{
		Netns: "/run/netns/" + c.client, UID: b.o.uid, Dest: serverIP.As4(), Ports: ports,
		Warmup: warmup, Duration: d, Payload: b.o.payload,
	})
	ctx, cancel := context.WithTimeout(context.Background(), warmup+d+30*time.Second)
	defer cancel()
	target(c.client)
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+c.client, "--", b.self)
	if c.follow {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: c.cgroupFD}
	}
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		childEnv + "=send", childCfgEnv + "=" + string(cfg), "GOMAXPROCS=1",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return res, errors.New("stopped")
	}
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		return res, err
	}
	b.child = cmd
	b.mu.Unlock()
	err := cmd.Wait()
	b.mu.Lock()
	b.child = nil
	b.mu.Unlock()
	if err != nil {
		return res, fmt.Errorf("sender: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, fmt.Errorf("sender output %q: %w", stdout.String(), err)
	}
	if res.UID != int(b.o.uid) {
		return res, fmt.Errorf("sender ran as uid %d, want %d", res.UID, b.o.uid)
	}
	return res, nil
}

// tableCase is one datapath case: a client namespace of its own with the
// case's table (or none), joined by veth to a server namespace of its own.
// All pairs are built alike; a round only picks the namespace the sender
// runs in, so no table is swapped (and no 100,000-element apply repeated)
// between measurements, and no conntrack state crosses cases.
type tableCase struct {
	name           string
	plan           *plan.Plan // nil: no table
	entries        int
	rules          int
	pos            string
	client, server string
	follow         bool    // the follower's programs run on the sender's packets
	cgroupFD       int     // the sender's cgroup (follow)
	applyMS        float64 // nft.Netlink.Apply wall time, including its verify
	tookMS         float64 // ApplyResult.Took
}

// install puts the case's table in its client namespace.
func (b *bench) install(c *tableCase) error {
	if c.plan == nil {
		return nil
	}
	start := time.Now()
	res, err := nft.Open(target(c.client)).Apply(c.plan)
	c.applyMS = ms(time.Since(start))
	if res != nil {
		c.tookMS = ms(res.Took)
	}
	if err != nil {
		return fmt.Errorf("apply %s: %w", c.name, err)
	}
	benchutil.Logf("installed %s in %s: apply %.0f ms (flush %.0f ms, verify %.0f ms)", c.name, c.client, c.applyMS, c.tookMS, c.applyMS-c.tookMS)
	return nil
}

// statusDefault reads the default counter through nft.Netlink.Status.
func (b *bench) statusDefault(c *tableCase) (uint64, error) {
	st, err := nft.Open(target(c.client)).Status(tableName, false)
	if err != nil {
		return 0, err
	}
	if !st.Present || st.Default == nil {
		return 0, errors.New("table or its default counter missing")
	}
	return st.Default.Packets, nil
}

// quickDefaultCounter reads the default rule's counter with a rule dump
// only: nft.Netlink.Status also dumps every set element, which takes
// seconds at 100,000 (see the control-plane figures).
func (b *bench) quickDefaultCounter(c *tableCase) (uint64, error) {
	if c.plan == nil {
		return 0, nil
	}
	target(c.client)
	f, err := os.Open("/run/netns/" + c.client)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return 0, err
	}
	tab := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	rules, err := conn.GetRules(tab, &nftables.Chain{Name: c.plan.Chain.Name, Table: tab})
	if err != nil {
		return 0, err
	}
	for _, r := range rules {
		if cmt, _ := userdata.GetString(r.UserData, userdata.TypeComment); !strings.HasPrefix(cmt, "default ") {
			continue
		}
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				return ctr.Packets, nil
			}
		}
	}
	return 0, errors.New("no default rule with a counter")
}

// stats reads the client's veth tx and the server's veth rx packets.
func (b *bench) stats(c *tableCase) (clientTx, serverRx uint64, err error) {
	_, tx, err1 := linkStats(c.client, clientDev)
	rx, _, err2 := linkStats(c.server, serverDev)
	return tx, rx, errors.Join(err1, err2)
}

func (b *bench) datapath() error {
	cases, err := b.datapathCases()
	if err != nil {
		return err
	}
	for i, c := range cases {
		c.client, c.server = fmt.Sprintf("%s-%c%c", b.base, 'a'+i, 'c'), fmt.Sprintf("%s-%c%c", b.base, 'a'+i, 's')
		if err := b.setupPair(c.client, c.server); err != nil {
			return fmt.Errorf("set up namespaces: %w", err)
		}
		if err := b.install(c); err != nil {
			return err
		}
		if c.follow {
			if err := b.startFollower(c); err != nil {
				return err
			}
		}
	}
	if !b.o.noChecks {
		if err := b.checks(cases[1:]); err != nil {
			return err
		}
	}
	results := make([]caseResult, len(cases))
	for i, c := range cases {
		results[i] = caseResult{Name: c.name, Entries: c.entries, Rules: c.rules, BenchPos: c.pos, ApplyMS: c.applyMS, ApplyTookMS: c.tookMS}
	}
	for r := 1; r <= b.o.rounds; r++ {
		for _, i := range roundOrder(len(cases), r) {
			rr, err := b.datapathRound(cases[i], r)
			if err != nil {
				return err
			}
			results[i].Rounds = append(results[i].Rounds, rr)
		}
	}
	compareCases(results)
	b.res.Datapath = results
	return nil
}

// datapathCases are the tables the datapath compares: none, a small and
// a large set, as many rules, and the small set with the follower.
func (b *bench) datapathCases() ([]*tableCase, error) {
	o := b.o
	bench := benchFlows(o.uid, b.ports)
	opts := plan.Options{Mode: o.mode, Source: "enforcebench"}

	// Large set: synthetic IPv4 flows plus the benchmark's.
	t0 := time.Now()
	synth := synthFlows(max(o.large, o.rules)-o.nPorts, 0, false, 1)
	benchutil.Logf("generated %d synthetic flows in %v", len(synth), time.Since(t0).Round(time.Millisecond))

	small := plan.Build(bench, opts)
	large := plan.Build(append(slices.Clone(synth[:o.large-o.nPorts]), bench...), opts)
	if large.Flows != o.large || len(large.Sets[0].Elements) != o.large || len(large.Skipped) > 0 {
		return nil, fmt.Errorf("large plan holds %d flows (%d ipv4, %d skipped), want %d", large.Flows, len(large.Sets[0].Elements), len(large.Skipped), o.large)
	}
	first := slices.IndexFunc(large.Sets[0].Elements, func(e plan.Element) bool { return e.UID == o.uid && e.IP == serverIP })
	largePos := fmt.Sprintf("elements %d-%d of %d in the plan's sorted order (a hash set in the kernel)", first+1, first+o.nPorts, o.large)

	// One rule each: the first synthetic flows (mostly TCP) as always_allow
	// rules, the benchmark's flows last.
	ruleOpts := opts
	ruleOpts.AlwaysAllow = asAllows(append(slices.Clone(synth[:o.rules-o.nPorts]), bench...))
	rules := plan.Build(nil, ruleOpts)

	cases := []*tableCase{
		{name: "no table"},
		{name: fmt.Sprintf("set, %d", o.small), plan: small, entries: o.small, rules: len(small.Rules), pos: "all of the set"},
		{name: fmt.Sprintf("set, %d", o.large), plan: large, entries: o.large, rules: len(large.Rules), pos: largePos},
		{name: fmt.Sprintf("rules, %d", o.rules), plan: rules, rules: len(rules.Rules),
			pos: fmt.Sprintf("the last %d of %d allow rules (chain rules %d-%d of %d)", o.nPorts, o.rules, len(rules.Rules)-o.nPorts-2, len(rules.Rules)-3, len(rules.Rules))},
	}
	if o.tenth {
		tenth := plan.Build(append(slices.Clone(synth[:o.large/10-o.nPorts]), bench...), opts)
		cases = append(cases, &tableCase{name: fmt.Sprintf("set, %d", o.large/10), plan: tenth, entries: o.large / 10, rules: len(tenth.Rules),
			pos: "a tenth of the large set, the same flows first"})
	}
	if o.follow {
		fp := b.followPlan(bench, opts)
		cases = append(cases, &tableCase{name: fmt.Sprintf("set, %d+follow", o.small), plan: fp, entries: o.small, rules: len(fp.Rules),
			pos: "all of the set; the follower's programs on the sender's cgroup", follow: true})
	}
	return cases, nil
}

// datapathRound sends through case c for round r, and notes what is off.
func (b *bench) datapathRound(c *tableCase, r int) (roundResult, error) {
	o := b.o
	d0, err := b.quickDefaultCounter(c)
	if err != nil {
		return roundResult{}, fmt.Errorf("%s: read the default counter: %w", c.name, err)
	}
	_, srx0, _ := b.stats(c)
	s, err := b.send(c, b.ports, o.warmup, o.duration)
	if err != nil {
		return roundResult{}, fmt.Errorf("%s, round %d: %w", c.name, r, err)
	}
	_, srx1, _ := b.stats(c)
	d1, err := b.quickDefaultCounter(c)
	if err != nil {
		return roundResult{}, fmt.Errorf("%s, round %d: read the default counter: %w", c.name, r, err)
	}
	rr := roundResult{Round: r, PPS: float64(s.Sent) / s.Seconds, Sent: s.WarmupSent + s.Sent, Errors: s.Errors, FirstErr: s.FirstErr,
		ServerRx: srx1 - srx0}
	if c.plan != nil {
		d := d1 - d0
		rr.DefaultPkts = &d
	}
	if s.Sent > 0 && s.CPUSeconds > 0 {
		rr.CPUUS, rr.SysShare = s.CPUSeconds*1e6/float64(s.Sent), s.SysSeconds/s.CPUSeconds
	}
	dr := "-"
	if rr.DefaultPkts != nil {
		dr = strconv.FormatUint(*rr.DefaultPkts, 10)
	}
	benchutil.Logf("round %d %-14s %9.0f pkt/s %7.2f us/pkt (cpu %.2f us/pkt, %.0f%% sys)  sent %d, errors %d, server rx %d, default counter +%s",
		r, c.name, rr.PPS, 1e6/rr.PPS, rr.CPUUS, rr.SysShare*100, rr.Sent, rr.Errors, rr.ServerRx, dr)
	if rr.Errors > 0 {
		b.note("%s, round %d: %d sendto errors (first: %s)", c.name, r, rr.Errors, rr.FirstErr)
	}
	if rr.DefaultPkts != nil && *rr.DefaultPkts > 0 {
		b.note("%s, round %d: the default rule counted %d packets (want 0: the benchmark's flows are all in the allow-list)", c.name, r, *rr.DefaultPkts)
	}
	if rr.ServerRx < rr.Sent {
		b.note("%s, round %d: the server namespace received %d of %d datagrams sent", c.name, r, rr.ServerRx, rr.Sent)
	}
	return rr, nil
}

// compareCases fills the medians, and the ratios of each case to the
// no-table case (results[0]) and to the small set (results[1]).
func compareCases(results []caseResult) {
	for i := range results {
		var pps, cpu []float64
		for _, r := range results[i].Rounds {
			pps, cpu = append(pps, r.PPS), append(cpu, r.CPUUS)
		}
		c := &results[i]
		c.MedianPPS, c.MedianCPUUS = median(pps), median(cpu)
		c.USPerPkt = 1e6 / c.MedianPPS
		c.AddedUS, c.AddedCPUUS = c.USPerPkt-results[0].USPerPkt, c.MedianCPUUS-results[0].MedianCPUUS
		if i >= 2 {
			c.RatioTo10 = c.MedianPPS / results[1].MedianPPS
			c.CPURatioTo10 = results[1].MedianCPUUS / c.MedianCPUUS
			var wall, cpu []float64
			for r, rr := range c.Rounds {
				base := results[1].Rounds[r]
				wall, cpu = append(wall, rr.PPS/base.PPS), append(cpu, base.CPUUS/rr.CPUUS)
			}
			c.PairedRatio, c.PairedCPURatio = median(wall), median(cpu)
		}
	}
}

// checks proves the setup measures what it claims, for each table case: a
// second table at a later priority (128, after ours at 0) counts the
// benchmark's packets by conntrack state, so we see they are NEW (the
// `ct state established,related accept` rule does not take them, the set
// lookup or the rules do); the default counter (read with
// nft.Netlink.Status) stays 0 and the server namespace receives them. Then
// a negative control: the same uid to a port not in the set must be
// refused by the default drop.
func (b *bench) checks(cases []*tableCase) error {
	check := fmt.Sprintf(`table inet %s {
	chain out {
		type filter hook output priority 128; policy accept;
		oifname %q ip daddr %s udp dport %d-%d ct state new counter
		oifname %q ip daddr %s udp dport %d-%d ct state established counter
	}
}
`, checkName, clientDev, serverIP, b.o.basePort, b.o.basePort+b.o.nPorts-1, clientDev, serverIP, b.o.basePort, b.o.basePort+b.o.nPorts-1)
	counters := regexp.MustCompile(`packets (\d+) bytes`)
	for _, c := range cases {
		if _, err := nsRun(c.client, []byte(check), "nft", "-f", "-"); err != nil {
			return err
		}
		_, srx0, _ := b.stats(c)
		s, err := b.send(c, b.ports, 0, 500*time.Millisecond)
		if err != nil {
			return fmt.Errorf("check %s: %w", c.name, err)
		}
		_, srx1, _ := b.stats(c)
		out, err := nsRun(c.client, nil, "nft", "list", "table", "inet", checkName)
		if err != nil {
			return err
		}
		if _, err := nsRun(c.client, nil, "nft", "delete", "table", "inet", checkName); err != nil {
			return err
		}
		m := counters.FindAllStringSubmatch(out, -1)
		if len(m) != 2 {
			return fmt.Errorf("check table: want 2 counters, got %q", out)
		}
		cr := checkResult{Case: c.name, Sent: s.Sent, ServerRx: srx1 - srx0, Errors: s.Errors, FirstErr: s.FirstErr}
		cr.CtNew, _ = strconv.ParseUint(m[0][1], 10, 64)
		cr.CtEstab, _ = strconv.ParseUint(m[1][1], 10, 64)
		start := time.Now()
		if cr.DefaultPkts, err = b.statusDefault(c); err != nil {
			return err
		}
		cr.ReadMS = ms(time.Since(start))
		benchutil.Logf("check %-14s sent %d: ct new %d, established %d, server rx %d, default counter %d (ReadStatus %.0f ms), errors %d",
			c.name, cr.Sent, cr.CtNew, cr.CtEstab, cr.ServerRx, cr.DefaultPkts, cr.ReadMS, cr.Errors)
		if cr.CtNew != cr.Sent || cr.CtEstab != 0 || cr.DefaultPkts != 0 || cr.Errors != 0 || cr.ServerRx < cr.Sent {
			b.note("check %s: sent %d, ct new %d, established %d, server rx %d, default counter %d, errors %d: not what the measurement assumes",
				c.name, cr.Sent, cr.CtNew, cr.CtEstab, cr.ServerRx, cr.DefaultPkts, cr.Errors)
		}
		b.res.Checks = append(b.res.Checks, cr)
	}
	// Negative control with the small set.
	c := cases[0]
	off := []int{b.o.basePort + b.o.nPorts} // not in the allow-list
	if off[0] > 65535 {
		off[0] = b.o.basePort - 1
	}
	d0, err := b.quickDefaultCounter(c)
	if err != nil {
		return err
	}
	s, err := b.send(c, off, 0, 200*time.Millisecond)
	if err != nil {
		return fmt.Errorf("negative control: %w", err)
	}
	d1, err := b.quickDefaultCounter(c)
	if err != nil {
		return err
	}
	nc := &checkResult{Case: fmt.Sprintf("%s, uid %d to port %d (not in the set)", c.name, b.o.uid, off[0]), Sent: s.Sent, Errors: s.Errors, FirstErr: s.FirstErr, DefaultPkts: d1 - d0}
	b.res.Negative = nc
	benchutil.Logf("negative control: %d sendto calls refused (%s), %d succeeded, default counter +%d", nc.Errors, nc.FirstErr, nc.Sent, nc.DefaultPkts)
	if b.o.mode == plan.ModeEnforce && (nc.Sent != 0 || nc.DefaultPkts != nc.Errors) {
		b.note("negative control: %d sends succeeded and the default counter is %d for %d refused: expected all refused and counted", nc.Sent, nc.DefaultPkts, nc.Errors)
	}
	if b.o.mode == plan.ModeAudit && nc.DefaultPkts != nc.Sent {
		b.note("negative control (audit): default counter %d for %d sent", nc.DefaultPkts, nc.Sent)
	}
	return nil
}

// controlPlane times Build and Apply of a synthetic baseline into the
// third namespace: the first apply into an empty namespace, then replaces.
func (b *bench) controlPlane() error {
	o := b.o
	t0 := time.Now()
	flows := synthFlows(o.cpFlows, o.cpV6, true, 2)
	benchutil.Logf("generated %d control-plane flows (%.0f%% ipv6) in %v", len(flows), o.cpV6*100, time.Since(t0).Round(time.Millisecond))
	opts := plan.Options{Mode: o.mode, Source: "enforcebench",
		DNSServers: []netip.Addr{netip.MustParseAddr("10.77.0.53")}}
	t := target(b.cp)
	res := &cpResult{Flows: len(flows), GoalMS: 500}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var p *plan.Plan
	for rep := 1; rep <= o.cpReps; rep++ {
		r, built, err := cpOnce(t, flows, opts, rep)
		if err != nil {
			return err
		}
		p = built
		res.Reps = append(res.Reps, r)
		benchutil.Logf("control plane rep %d: build %.0f ms, apply %.0f ms (flush %.0f, verify %.0f), total %.0f ms; ReadStatus alone %.0f ms",
			rep, r.BuildMS, r.ApplyMS, r.FlushMS, r.VerifyMS, r.TotalMS, r.ReadMS)
	}
	res.IPv4, res.IPv6, res.Rules = len(p.Sets[0].Elements), len(p.Sets[1].Elements), len(p.Rules)
	var text bytes.Buffer
	_ = p.Text(&text)
	res.TextBytes = text.Len()
	res.summarize()
	if res.MedTotal > res.GoalMS {
		b.note("control plane: median build+apply %.0f ms is over the %.0f ms goal", res.MedTotal, res.GoalMS)
	}
	if o.nftText {
		start := time.Now()
		if _, err := nsRun(b.cp, text.Bytes(), "nft", "-f", "-"); err != nil {
			res.NftTextErr = err.Error()
			if len(res.NftTextErr) > 300 {
				res.NftTextErr = res.NftTextErr[:300] + "..."
			}
		}
		res.NftTextMS = ms(time.Since(start))
		benchutil.Logf("nft -f of the plan's text (%d bytes): %.0f ms %s", text.Len(), res.NftTextMS, res.NftTextErr)
	}
	if _, err := nft.Open(t).Remove(p.Table); err != nil {
		return err
	}
	b.res.ControlPlane = res
	return nil
}

// cpOnce builds the plan of flows, applies it to t and reads it back,
// timing each.
func cpOnce(t nft.Target, flows []store.Flow, opts plan.Options, rep int) (cpRep, *plan.Plan, error) {
	runtime.GC()
	start := time.Now()
	p := plan.Build(flows, opts)
	build := time.Since(start)
	start = time.Now()
	ar, err := nft.Open(t).Apply(p)
	apply := time.Since(start)
	if err != nil {
		return cpRep{}, nil, fmt.Errorf("rep %d: apply %d flows: %w", rep, p.Flows, err)
	}
	start = time.Now()
	st, err := nft.Open(t).Status(p.Table, true)
	read := time.Since(start)
	if err != nil {
		return cpRep{}, nil, fmt.Errorf("rep %d: read status: %w", rep, err)
	}
	n := 0
	for _, s := range st.Sets {
		n += s.Elements
	}
	if n != p.Flows {
		return cpRep{}, nil, fmt.Errorf("rep %d: the kernel holds %d elements, want %d", rep, n, p.Flows)
	}
	return cpRep{Rep: rep, Replace: rep > 1, BuildMS: ms(build), ApplyMS: ms(apply), FlushMS: ms(ar.Took),
		VerifyMS: ms(apply - ar.Took), ReadMS: ms(read), TotalMS: ms(build + apply)}, p, nil
}

// summarize fills the minima and medians of the repetitions.
func (res *cpResult) summarize() {
	pick := func(f func(cpRep) float64) []float64 {
		var v []float64
		for _, r := range res.Reps {
			v = append(v, f(r))
		}
		return v
	}
	res.MinBuild, res.MedBuild = slices.Min(pick(func(r cpRep) float64 { return r.BuildMS })), median(pick(func(r cpRep) float64 { return r.BuildMS }))
	res.MinApply, res.MedApply = slices.Min(pick(func(r cpRep) float64 { return r.ApplyMS })), median(pick(func(r cpRep) float64 { return r.ApplyMS }))
	res.MinTotal, res.MedTotal = slices.Min(pick(func(r cpRep) float64 { return r.TotalMS })), median(pick(func(r cpRep) float64 { return r.TotalMS }))
	res.MedFlush = median(pick(func(r cpRep) float64 { return r.FlushMS }))
	res.MedVerify = median(pick(func(r cpRep) float64 { return r.VerifyMS }))
	res.MedRead = median(pick(func(r cpRep) float64 { return r.ReadMS }))
}

// readScaling applies plans of growing size into the control-plane
// namespace and times Apply (flush and verify) and ReadStatus alone, with
// the element comments Build writes and with none: a dump that restarts
// its walk for every message would grow with the square of the size and
// with the bytes per element.
func (b *bench) readScaling() error {
	t := target(b.cp)
	flows := synthFlows(slices.Max(b.o.scaling), 0, false, 3)
	opts := plan.Options{Mode: b.o.mode, Source: "enforcebench"}
	for _, comments := range []bool{true, false} {
		var prev scalePoint
		for _, n := range b.o.scaling {
			p := plan.Build(flows[:n], opts)
			if !comments {
				for i := range p.Sets {
					for j := range p.Sets[i].Elements {
						p.Sets[i].Elements[j].Comment = ""
					}
				}
			}
			start := time.Now()
			ar, err := nft.Open(t).Apply(p)
			apply := time.Since(start)
			if err != nil {
				return fmt.Errorf("apply %d elements: %w", n, err)
			}
			start = time.Now()
			if _, err := nft.Open(t).Status(p.Table, true); err != nil {
				return err
			}
			read := time.Since(start)
			sp := scalePoint{Elements: n, Comments: comments, FlushMS: ms(ar.Took), VerifyMS: ms(apply - ar.Took), ReadMS: ms(read),
				ReadUSPerEl: float64(read.Microseconds()) / float64(n)}
			if prev.Elements > 0 && prev.Elements*2 == n {
				sp.ReadVsHalfNo = sp.ReadMS / prev.ReadMS
			}
			prev = sp
			b.res.ReadScaling = append(b.res.ReadScaling, sp)
			benchutil.Logf("read scaling: %6d elements, comments %-5v: flush %5.0f ms, verify %5.0f ms, ReadStatus %5.0f ms (%.1f us/element)",
				n, comments, sp.FlushMS, sp.VerifyMS, sp.ReadMS, sp.ReadUSPerEl)
		}
	}
	_, err := nft.Open(t).Remove(tableName)
	return err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ---------------------------------------------------------------------------
// Summary.

func printSummary(w io.Writer, res *output, o options) {
	e := res.Env
	fmt.Fprintf(w, "enforcebench: kernel %s, %d CPUs, mode %s, sender uid %d, %s, %d-byte payload\n",
		e.Kernel, e.CPUs, e.Mode, e.UID, e.Flows, e.Payload)
	if len(res.Checks) > 0 {
		fmt.Fprintf(w, "checks (0.5 s each; a table at priority 128 counts the benchmark's packets by ct state):\n")
		for _, c := range res.Checks {
			fmt.Fprintf(w, "  %-16s sent %7d  ct new %7d  established %d  server rx %7d  default counter %d (ReadStatus %.0f ms)  send errors %d\n",
				c.Case, c.Sent, c.CtNew, c.CtEstab, c.ServerRx, c.DefaultPkts, c.ReadMS, c.Errors)
		}
		if n := res.Negative; n != nil {
			fmt.Fprintf(w, "  negative control, %s: %d sends refused (%s), %d went out, default counter %d\n",
				n.Case, n.Errors, n.FirstErr, n.Sent, n.DefaultPkts)
		}
	}
	if len(res.Datapath) > 0 {
		printRates(w, res, o)
		printPaired(w, res, o)
		printRounds(w, res)
	}
	if cp := res.ControlPlane; cp != nil {
		fmt.Fprintf(w, "control plane, %d-entry baseline: build %.0f ms, apply %.0f ms (verify %.0f ms), total %.0f ms (goal < %.0f ms) [medians of %d]\n",
			cp.Flows, cp.MedBuild, cp.MedApply, cp.MedVerify, cp.MedTotal, cp.GoalMS, len(cp.Reps))
		fmt.Fprintf(w, "  min: build %.0f ms, apply %.0f ms, total %.0f ms; apply = flush %.0f ms + read-back verify %.0f ms; ReadStatus alone %.0f ms\n",
			cp.MinBuild, cp.MinApply, cp.MinTotal, cp.MedFlush, cp.MedVerify, cp.MedRead)
		fmt.Fprintf(w, "  plan: %d ipv4 + %d ipv6 elements, %d chain rules, nft text %.1f MB\n", cp.IPv4, cp.IPv6, cp.Rules, float64(cp.TextBytes)/1e6)
		for _, r := range cp.Reps {
			kind := "into empty namespace"
			if r.Replace {
				kind = "replace"
			}
			fmt.Fprintf(w, "    rep %d (%s): build %.0f, apply %.0f (flush %.0f, verify %.0f), total %.0f, ReadStatus %.0f ms\n",
				r.Rep, kind, r.BuildMS, r.ApplyMS, r.FlushMS, r.VerifyMS, r.TotalMS, r.ReadMS)
		}
		if cp.NftTextMS > 0 {
			fmt.Fprintf(w, "  nft -f of the same text: %.0f ms %s\n", cp.NftTextMS, cp.NftTextErr)
		}
	}
	if len(res.ReadScaling) > 0 {
		fmt.Fprintf(w, "read scaling (nft.Netlink.Apply into a fresh table, then nft.Netlink.Status alone):\n")
		for _, p := range res.ReadScaling {
			fmt.Fprintf(w, "  %6d elements, comments %-5v: flush %5.0f ms, verify %5.0f ms, ReadStatus %5.0f ms (%.1f us/element", p.Elements, p.Comments, p.FlushMS, p.VerifyMS, p.ReadMS, p.ReadUSPerEl)
			if p.ReadVsHalfNo > 0 {
				fmt.Fprintf(w, ", %.1fx the half size", p.ReadVsHalfNo)
			}
			fmt.Fprintln(w, ")")
		}
	}
	if len(res.Notes) > 0 {
		fmt.Fprintln(w, "notes:")
		for _, n := range res.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	fmt.Fprintf(w, "total run time %.0f s; namespaces %s-* removed\n", e.Seconds, e.Netns)
}

// printRates prints each case's wall-clock and CPU rates.
func printRates(w io.Writer, res *output, o options) {
	e := res.Env
	fmt.Fprintf(w, "datapath (udp sends through the output chain, %d rounds of %s, median):\n", e.Rounds, e.Duration)
	ratio := func(r float64) string {
		s := fmt.Sprintf("ratio to %d: %.3f", o.small, r)
		if r < 0.5 {
			s += fmt.Sprintf(" (%.0fx slower)", 1/r)
		}
		return s
	}
	fmt.Fprintf(w, "  wall clock:\n")
	for i, c := range res.Datapath {
		printRate(w, i, c.Name, c.MedianPPS, "pkt/s", c.USPerPkt, c.AddedUS, ratio(c.RatioTo10))
	}
	fmt.Fprintf(w, "  sender CPU time (user+sys, incl. the veth receive it runs in softirq):\n")
	for i, c := range res.Datapath {
		printRate(w, i, c.Name, 1e6/c.MedianCPUUS, "pkt/cpu-s", c.MedianCPUUS, c.AddedCPUUS, ratio(c.CPURatioTo10))
	}
}

// printRate prints case i's rate, its cost over no table (case 0) and,
// from case 2 on, its ratio to the small set.
func printRate(w io.Writer, i int, name string, rate float64, unit string, us, added float64, ratio string) {
	fmt.Fprintf(w, "  %-16s %9.0f %s %7.2f us/pkt", name, rate, unit, us)
	if i > 0 {
		fmt.Fprintf(w, "  %+8.2f us vs no table", added)
	}
	if i >= 2 {
		fmt.Fprintf(w, "  %s", ratio)
	}
	fmt.Fprintln(w)
}

// printPaired prints the large set's and the follower's ratios to the
// small set, against their goals.
func printPaired(w io.Writer, res *output, o options) {
	if len(res.Datapath) >= 4 {
		l, rl := res.Datapath[2], res.Datapath[3]
		fmt.Fprintf(w, "  paired (median of per-round ratios): set %d/%d wall %.3f, cpu %.3f; rules %d/set %d wall %.3f (%.0fx slower), cpu %.3f (%.0fx slower)\n",
			o.large, o.small, l.PairedRatio, l.PairedCPURatio, o.rules, o.small, rl.PairedRatio, 1/rl.PairedRatio, rl.PairedCPURatio, 1/rl.PairedCPURatio)
		for _, v := range []struct {
			what string
			r    float64
		}{{"wall-clock rate (medians)", l.RatioTo10}, {"cpu-time rate (medians)", l.CPURatioTo10},
			{"wall-clock rate (paired)", l.PairedRatio}, {"cpu-time rate (paired)", l.PairedCPURatio}} {
			verdict := "within"
			if v.r < 1/1.1 {
				verdict = "NOT within"
			}
			fmt.Fprintf(w, "  set %d vs %d, %s: ratio %.3f, %s the 1.1x goal (>= 0.909)\n", o.large, o.small, v.what, v.r, verdict)
		}
	}
	if o.tenth && len(res.Datapath) >= 5 {
		l, t := res.Datapath[2], res.Datapath[4]
		var wall, cpu []float64
		for r, rr := range l.Rounds {
			wall, cpu = append(wall, rr.PPS/t.Rounds[r].PPS), append(cpu, t.Rounds[r].CPUUS/rr.CPUUS)
		}
		fmt.Fprintf(w, "  set %d vs set %d (paired, rate ratio; goal: cost x1.1 at most, ratio >= 0.909): wall %.3f, cpu %.3f; per round wall %s\n",
			o.large, o.large/10, median(wall), median(cpu), fmtRatios(wall))
	}
	for _, c := range res.Datapath[2:] {
		if !strings.HasSuffix(c.Name, "+follow") {
			continue
		}
		fmt.Fprintf(w, "  follower's per-packet check, %s vs set %d (paired): wall rate %.3f, cpu rate %.3f; cost x%.3f wall, x%.3f cpu (goal <= 1.05)\n",
			c.Name, o.small, c.PairedRatio, c.PairedCPURatio, 1/c.PairedRatio, 1/c.PairedCPURatio)
	}
}

// printRounds prints every round, and what the datapath accepted.
func printRounds(w io.Writer, res *output) {
	fmt.Fprintf(w, "  per round (pkt/s wall, cpu us/pkt):\n")
	var maxDrop uint64
	var errs uint64
	short := 0
	for _, c := range res.Datapath {
		var parts []string
		for _, r := range c.Rounds {
			parts = append(parts, fmt.Sprintf("%.0f (%.2f)", r.PPS, r.CPUUS))
			if r.DefaultPkts != nil {
				maxDrop = max(maxDrop, *r.DefaultPkts)
			}
			errs += r.Errors
			if r.ServerRx < r.Sent {
				short++
			}
		}
		fmt.Fprintf(w, "    %-16s %s\n", c.Name, strings.Join(parts, "  "))
	}
	for _, c := range res.Datapath[1:] {
		fmt.Fprintf(w, "  %-16s apply %5.0f ms (flush %4.0f, verify %5.0f); the benchmark's flows: %s\n", c.Name+":", c.ApplyMS, c.ApplyTookMS, c.ApplyMS-c.ApplyTookMS, c.BenchPos)
	}
	fmt.Fprintf(w, "  accepted: default drop counter max %d over all rounds, %d send errors, %d runs where the server got fewer than sent\n", maxDrop, errs, short)
}

func fmtRatios(v []float64) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(out, " ")
}
