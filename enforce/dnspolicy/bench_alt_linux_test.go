//go:build linux

package dnspolicy

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/lab"
)

// BenchmarkQueryRateAlternating is BenchmarkQueryRate in many short
// blocks: one client process floods DP_BLOCK queries (default 5000) at a
// time, and between two blocks the program on the cgroup changes: none
// (off), one that returns at once (hook), the policy in audit, in
// enforce (the programs Install loads, attached and detached directly).
// DP_ALT_ROUNDS rounds (default 200) of the four, in an order that
// turns every round. On a machine that others load, a block's time is
// its own plus theirs; the median of the paired ratios of many short
// neighbouring blocks, and the ratio of the least disturbed blocks (p10
// of CPU time, p90 of rate), are what load moves least.
func BenchmarkQueryRateAlternating(b *testing.B) {
	l := newBenchLab(b)
	progs := l.loadModes(b)
	msg := query("www.example.lab")
	c := l.startBlocks(b, msg, envInt("DP_BLOCK", 5000))
	modes := []Mode{Off, hookMode, Audit, Enforce}
	rates, cpus := map[Mode][]float64{}, map[Mode][]float64{}
	pairRate, pairCPU := map[Mode][]float64{}, map[Mode][]float64{}
	var overHook []float64
	for round := range envInt("DP_ALT_ROUNDS", 200) {
		for _, m := range roundOrder(modes, round) {
			r, cpu := c.block(b, l, progs[m])
			rates[m], cpus[m] = append(rates[m], r), append(cpus[m], cpu)
		}
		for _, m := range modes[1:] {
			pairRate[m] = append(pairRate[m], rates[m][round]/rates[Off][round])
			pairCPU[m] = append(pairCPU[m], cpus[Off][round]/cpus[m][round])
		}
		overHook = append(overHook, cpus[hookMode][round]/cpus[Enforce][round])
	}
	// The policy's own part, the hook's dispatch left out: what running
	// it inside a program already on the hook would cost at best.
	b.ReportMetric(median(overHook), "enforce/hook_cpu_paired")
	for _, m := range modes[1:] {
		b.ReportMetric(median(pairRate[m]), string(m)+"/off_paired")
		b.ReportMetric(median(pairCPU[m]), string(m)+"/off_cpu_paired")
		b.ReportMetric(quantile(rates[m], 0.9)/quantile(rates[Off], 0.9), string(m)+"/off_p90")
		b.ReportMetric(quantile(cpus[Off], 0.1)/quantile(cpus[m], 0.1), string(m)+"/off_cpu_p10")
	}
	for _, m := range modes {
		b.ReportMetric(median(cpus[m]), string(m)+"_cpu_us/query")
		b.Logf("%-7s queries/s median %.0f p90 %.0f, CPU us/query median %.2f p10 %.2f", m,
			median(rates[m]), quantile(rates[m], 0.9), median(cpus[m]), quantile(cpus[m], 0.1))
	}
}

// loadModes loads the programs of the modes, as Install would for the
// lab's namespace: nil for off.
func (l *benchLab) loadModes(b *testing.B) map[Mode]*ebpf.Program {
	netns, err := netnsCookie(l.cfg.Target)
	if err != nil {
		b.Fatal(err)
	}
	entries, _ := Dedup(learned)
	progs := map[Mode]*ebpf.Program{Off: nil}
	for _, m := range []Mode{Audit, Enforce} {
		key, err := newKey()
		if err != nil {
			b.Fatal(err)
		}
		var objs bpf.DnspolicyObjects
		if err := load(&objs, m, netns, key, len(entries), lab.NewBPFFS(b)); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { objs.Close() })
		if err := fill(&objs, key, entries); err != nil {
			b.Fatal(err)
		}
		progs[m] = objs.DnsPolicy
	}
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSKB, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { empty.Close() })
	progs[hookMode] = empty
	return progs
}

// blockClient is the flooding client: a line on in starts a block, a
// line on out is its rate and CPU time.
type blockClient struct {
	in  io.Writer
	out *bufio.Scanner
}

func (l *benchLab) startBlocks(b *testing.B, msg []byte, n int) *blockClient {
	return l.startClient(b, "blocks", msg, n)
}

// startClient starts the helper in mode (blocks or latblocks).
func (l *benchLab) startClient(b *testing.B, mode string, msg []byte, n int) *blockClient {
	ctx, cancel := context.WithCancel(context.Background())
	a := lab.As{UID: alice, GID: alice, Netns: l.p.Client, Cgroup: l.cg}
	cmd := a.Command(ctx, "env", "DP_HELPER="+mode, "DP_SERVER="+lab.ServerIP4+":53",
		"DP_MSG="+hex.EncodeToString(msg), "DP_N="+strconv.Itoa(n), helperBin)
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close(); cancel(); _ = cmd.Wait() })
	return &blockClient{in: in, out: bufio.NewScanner(out)}
}

// block runs one block with prog (nil: none) on the cgroup: its rate and
// CPU microseconds a query.
func (c *blockClient) block(b *testing.B, l *benchLab, prog *ebpf.Program) (float64, float64) {
	f := c.run(b, l, prog)
	if len(f) != 2 {
		b.Fatal(f)
	}
	r, err1 := strconv.ParseFloat(f[0], 64)
	cpu, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil {
		b.Fatal(f)
	}
	return r, cpu
}

// run runs one block with prog (nil: none) on the cgroup, and returns
// the fields of the line the client printed.
func (c *blockClient) run(b *testing.B, l *benchLab, prog *ebpf.Program) []string {
	if prog != nil {
		lk, err := link.AttachCgroup(link.CgroupOptions{Path: l.cg.Path, Attach: ebpf.AttachCGroupInetEgress, Program: prog})
		if err != nil {
			b.Fatal(err)
		}
		defer lk.Close()
	}
	if _, err := fmt.Fprintln(c.in, "go"); err != nil {
		b.Fatal(err)
	}
	if !c.out.Scan() {
		b.Fatalf("the client stopped: %v", c.out.Err())
	}
	return strings.Fields(c.out.Text())
}

// helperBlocks floods n queries for each line it reads, and prints the
// rate and the thread's CPU microseconds a query of each block.
func helperBlocks(server string, msg []byte, n int) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		floodOnce(c, msg, n)
	}
	return in.Err()
}

// BenchmarkResolveLatencyAlternating: round trips of lookups of a learned
// name to dnsmasq, one after the other, in blocks of DP_LAT_BLOCK
// (default 10) from one client, the program on the cgroup changing
// between blocks (none, audit, enforce), DP_LAT_ALT_ROUNDS rounds
// (default 300). A hiccup of a loaded machine lands in any mode alike, so
// the p99 of each mode's pooled lookups can be compared: the goal
// is enforce within 1.1x of audit.
func BenchmarkResolveLatencyAlternating(b *testing.B) {
	l := newBenchLab(b)
	progs := l.loadModes(b)
	c := l.startClient(b, "latblocks", query("www.example.lab"), envInt("DP_LAT_BLOCK", 10))
	modes := []Mode{Off, Audit, Enforce}
	lat := map[Mode][]float64{}
	for round := range envInt("DP_LAT_ALT_ROUNDS", 1000) {
		order := slices.Clone(modes)
		rot := round % len(order)
		order = append(order[rot:], order[:rot]...)
		for _, m := range order {
			for _, f := range c.run(b, l, progs[m]) {
				us, err := strconv.ParseFloat(f, 64)
				if err != nil {
					b.Fatal(f)
				}
				lat[m] = append(lat[m], us)
			}
		}
	}
	for _, m := range modes {
		b.ReportMetric(quantile(lat[m], 0.5), string(m)+"_p50_us")
		b.ReportMetric(quantile(lat[m], 0.99), string(m)+"_p99_us")
		b.Logf("%-7s %d lookups: p50 %.0f us, p90 %.0f, p99 %.0f", m, len(lat[m]),
			quantile(lat[m], 0.5), quantile(lat[m], 0.9), quantile(lat[m], 0.99))
	}
	b.ReportMetric(quantile(lat[Enforce], 0.99)/quantile(lat[Audit], 0.99), "enforce/audit_p99")
	b.ReportMetric(quantile(lat[Enforce], 0.5)/quantile(lat[Audit], 0.5), "enforce/audit_p50")
	b.ReportMetric(quantile(lat[Enforce], 0.99)/quantile(lat[Off], 0.99), "enforce/off_p99")
}

// helperLatencyBlocks does n lookups, one after the other, for each line
// it reads, and prints their round trips in microseconds on one line.
func helperLatencyBlocks(server string, msg []byte, n int) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	in := bufio.NewScanner(os.Stdin)
	id := 0
	for in.Scan() {
		var line []string
		for range n {
			id++
			d, err := roundTrip(c, msg, buf, uint16(id))
			if err != nil {
				return err
			}
			line = append(line, strconv.FormatInt(d.Microseconds(), 10))
		}
		fmt.Println(strings.Join(line, " "))
	}
	return in.Err()
}
