//go:build linux

// Command servicebench measures per-service matching: the per-packet cost
// of a table of match user,service against match user on the same
// baseline (100,000 flows over 200 services by default), and how long a
// restarted service's cgroup goes without its elements (from the mkdir
// that re-creates it to the kernel's acknowledgement of its elements by
// nft.Keeper). It prints figures and ratios; it is not a pass/fail test.
//
// It needs root. It creates a network namespace egsb-<random> with a veth
// pair inside it, a cgroup <cgroup2 mount>/egress-bench-<random> with the
// services below it, and removes them at the end. It never attaches to
// the root cgroup and adds no rule outside its namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

const (
	srcIP = "10.99.0.2"
	dstIP = "10.99.0.1"
)

type opts struct {
	flows, services, rounds, restarts int
	duration                          time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-send" {
		os.Exit(sendMain(os.Args[2:]))
	}
	var o opts
	flag.IntVar(&o.flows, "flows", 100000, "flows of the baseline")
	flag.IntVar(&o.services, "services", 200, "services the flows are spread over")
	flag.IntVar(&o.rounds, "rounds", 7, "paired rounds of the per-packet measure")
	flag.IntVar(&o.restarts, "restarts", 200, "restarts of a service for the latency figures")
	flag.DurationVar(&o.duration, "duration", 2*time.Second, "sending time of each case in a round")
	flag.Parse()
	cl, err := benchutil.Start("servicebench", "it creates a network namespace and cgroups")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	err = run(o, cl)
	cl.Run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "servicebench:", err)
		os.Exit(1)
	}
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// setup makes the namespace (a veth pair, both ends inside, a neighbour
// entry so packets leave without ARP) and the services' cgroups.
func setup(o opts, cl *benchutil.Cleaner, id string) (ns string, cg nft.CgroupIDs, parent string, err error) {
	ns = "egsb-" + id
	if err = cl.Netns(ns); err != nil {
		return
	}
	for _, c := range [][]string{
		{"link", "add", "egs0", "type", "veth", "peer", "name", "egs1"},
		{"addr", "add", srcIP + "/24", "dev", "egs0"},
		{"link", "set", "egs0", "up"}, {"link", "set", "egs1", "up"},
		{"neigh", "replace", dstIP, "lladdr", "02:00:00:00:00:01", "dev", "egs0"},
	} {
		if err = sh(append([]string{"ip", "-n", ns}, c...)...); err != nil {
			return
		}
	}
	if cg, err = nft.HostCgroups(); err != nil {
		return
	}
	rel := "egress-bench-" + id
	parent = filepath.Join(cg.Mount, rel)
	if err = os.Mkdir(parent, 0o755); err != nil {
		return
	}
	cl.Add(func() {
		for i := range o.services {
			_ = os.WriteFile(filepath.Join(parent, svcName(i), "cgroup.kill"), []byte("1"), 0)
			_ = os.Remove(filepath.Join(parent, svcName(i)))
		}
		_ = os.Remove(parent)
	})
	for i := range o.services {
		if err = os.Mkdir(filepath.Join(parent, svcName(i)), 0o755); err != nil {
			return
		}
	}
	return ns, cg, rel, nil
}

func svcName(i int) string { return fmt.Sprintf("svc%03d.service", i) }

// baseline is o.flows flows of uid 0 to distinct address and port pairs,
// spread round-robin over the services; the bench's own flow (UDP to
// dstIP:9) is the last one, of service 0.
func baseline(o opts, rel string) []store.Flow {
	now := time.Now()
	flows := make([]store.Flow, 0, o.flows)
	for i := range o.flows - 1 {
		ip := netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)})
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: 0, Proto: plan.ProtoUDP, IP: ip, Port: uint16(1000 + i%50000)},
			Hits: 1, FirstSeen: now, LastSeen: now, Cgroups: []string{"/" + rel + "/" + svcName(i%o.services)}})
	}
	return append(flows, store.Flow{FlowKey: store.FlowKey{UID: 0, Proto: plan.ProtoUDP, IP: netip.MustParseAddr(dstIP), Port: 9},
		Hits: 1, FirstSeen: now, LastSeen: now, Cgroups: []string{"/" + rel + "/" + svcName(0)}})
}

func run(o opts, cl *benchutil.Cleaner) error {
	id := benchutil.RandomID()
	ns, cg, rel, err := setup(o, cl, id)
	if err != nil {
		return err
	}
	k := nft.Open(nft.Target{Netns: ns})
	flows := baseline(o, rel)
	plans := map[string]*plan.Plan{}
	for _, m := range []string{plan.MatchUser, plan.MatchUserService} {
		plans[m] = plan.Build(flows, plan.Options{Mode: plan.ModeAudit, Match: m})
	}
	fmt.Printf("servicebench: kernel %s, %d flows over %d services, %d CPUs\n", benchutil.KernelRelease(), o.flows, o.services, runtime.NumCPU())
	svc0, err := os.Open(filepath.Join(cg.Mount, rel, svcName(0)))
	if err != nil {
		return err
	}
	defer svc0.Close()
	var ratios, cpuRatios []float64
	for r := range o.rounds {
		res := map[string][2]float64{}
		order := []string{plan.MatchUser, plan.MatchUserService}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, m := range order {
			if _, err := k.Apply(plans[m]); err != nil {
				return fmt.Errorf("apply %s: %w", m, err)
			}
			pps, cpu, err := send(ns, svc0, o.duration)
			if err != nil {
				return err
			}
			res[m] = [2]float64{pps, cpu}
		}
		u, s := res[plan.MatchUser], res[plan.MatchUserService]
		ratios = append(ratios, u[0]/s[0])
		cpuRatios = append(cpuRatios, s[1]/u[1])
		fmt.Printf("  round %d: match user %.0f pkt/s (%.2f us cpu/pkt), user,service %.0f pkt/s (%.2f us cpu/pkt): cost x%.3f wall, x%.3f cpu\n",
			r+1, u[0], u[1], s[0], s[1], u[0]/s[0], s[1]/u[1])
	}
	fmt.Printf("per-packet cost of match user,service vs match user (median of paired rounds): x%.3f wall, x%.3f cpu (goal <= 1.1)\n",
		median(ratios), median(cpuRatios))
	return restarts(o, k, cg, rel, plans[plan.MatchUserService])
}

// restarts re-creates one service's cgroup o.restarts times while a
// Keeper runs, and prints the time from each mkdir to the kernel's
// acknowledgement of the service's elements on the new id.
func restarts(o opts, k *nft.Netlink, cg nft.CgroupIDs, rel string, p *plan.Plan) error {
	if _, err := k.Apply(p); err != nil {
		return err
	}
	keeper := k.NewKeeper(p, cg)
	// Start here too: a removal before Run's own Start would go unseen.
	if err := keeper.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan nft.ServiceChange, 16)
	done := make(chan error, 1)
	go func() {
		done <- keeper.Run(ctx, func(c nft.ServiceChange) {
			changes <- c
		})
	}()
	dir := filepath.Join(cg.Mount, rel, svcName(1))
	var lat, took []float64
	for i := range o.restarts {
		if err := os.Remove(dir); err != nil {
			return err
		}
		if err := waitChange(changes, done, func(c nft.ServiceChange) bool { return c.To == 0 }); err != nil {
			return fmt.Errorf("restart %d: %w", i+1, err)
		}
		start := time.Now()
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		var c nft.ServiceChange
		if err := waitChange(changes, done, func(x nft.ServiceChange) bool { c = x; return x.To != 0 }); err != nil {
			return fmt.Errorf("restart %d, mkdir: %w", i+1, err)
		}
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		took = append(took, float64(c.Took.Microseconds())/1000)
	}
	n := len(p.Services())
	fmt.Printf("restart to elements (%d restarts of a service with %d of %d elements, mkdir -> kernel ack): p50 %.2f ms, p99 %.2f ms, max %.2f ms (keeper's own share: p50 %.2f ms, p99 %.2f ms)\n",
		len(lat), p.Elements()/max(n, 1), p.Elements(), pct(lat, 50), pct(lat, 99), slices.Max(lat), pct(took, 50), pct(took, 99))
	return nil
}

func waitChange(ch <-chan nft.ServiceChange, done <-chan error, ok func(nft.ServiceChange) bool) error {
	for {
		select {
		case c := <-ch:
			if ok(c) {
				return nil
			}
		case err := <-done:
			return fmt.Errorf("keeper stopped: %v", err)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("no change in 30 s")
		}
	}
}

func median(v []float64) float64 { return pct(v, 50) }

func pct(v []float64, p int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// send runs the sender in the service's cgroup for d and returns its
// packets a second and CPU microseconds a packet.
func send(ns string, cgroup *os.File, d time.Duration) (pps, cpuUS float64, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self, "-send", ns, d.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgroup.Fd())}
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("sender: %w", err)
	}
	var n uint64
	if _, err := fmt.Sscan(string(out), &n); err != nil {
		return 0, 0, fmt.Errorf("sender printed %q", out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return float64(n) / d.Seconds(), float64(cpu.Microseconds()) / float64(n), nil
}

// sendMain is the sender: it enters the namespace and sends UDP
// datagrams to dstIP:9 for the duration (no answer comes, so conntrack
// keeps each packet new and the table looks every one up), then prints
// how many it sent.
func sendMain(args []string) int {
	runtime.LockOSThread()
	fd, err := unix.Open("/run/netns/"+args[0], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	d, _ := time.ParseDuration(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	to := &unix.SockaddrInet4{Port: 9, Addr: [4]byte(net.ParseIP(dstIP).To4())}
	buf := make([]byte, 16)
	var n uint64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for range 256 {
			if unix.Sendto(s, buf, 0, to) == nil {
				n++
			}
		}
	}
	fmt.Println(strconv.FormatUint(n, 10))
	return 0
}
