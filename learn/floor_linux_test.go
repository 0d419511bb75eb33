//go:build linux

package learn

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/egresskit/egress/internal/cgroupbpf"
	"github.com/egresskit/egress/internal/lab"
)

// floorKind is an operation of BenchmarkHookFloor's client.
type floorKind struct {
	name  string
	n     int  // operations a block
	exact bool // every operation is a hit of the learner
}

// floorVariant is what is attached to the cgroup during a block.
type floorVariant struct {
	name   string
	attach func() error
	detach func() error
}

// BenchmarkHookFloor measures what the hooks cost a sender, per
// operation, in the sender's own thread CPU time: a client in the cgroup
// (testdata/floorsend) does blocks of connected 64-byte UDP sends, of
// unconnected sendto()s and of TCP connects, and between blocks the
// benchmark changes what is attached: nothing (bare), a do-nothing
// egress program, do-nothing programs on the learner's six hooks, or the
// learner's programs. The variants follow each other in short blocks,
// their order rotated every cycle, so each cycle pairs them within a
// fraction of a second: what other load does to the machine moves them
// alike. It prints, per kind and variant, the median ns an operation
// and the median of the per-cycle differences and ratios to bare. It
// also checks the learner's counts: every sendto and connect made while
// it was attached is a hit. Run it alone, under the bench lock:
//
//	CI=true go test -run '^$' -bench HookFloor -benchtime 1x ./learn/
//
// EGRESS_FLOOR_CYCLES sets the number of cycles (default 30),
// EGRESS_FLOOR_OPS the operations of a block (default 20000; connects: a
// thirteenth), EGRESS_FLOOR_KINDS the kinds (udp,sendto,connect).
func BenchmarkHookFloor(b *testing.B) {
	lab.Require(b, "go")
	bin := buildTestdata(b, "floorsend")
	// Loopback in a namespace of its own, as learnbench's workloads: the
	// receiving side's work runs partly in the sender's thread.
	ns := lab.NewNetns(b)
	cg := lab.NewCgroup(b)
	udpSink(b, ns, "127.0.0.1:9301")
	lab.ServeHTTP(b, ns, "127.0.0.1:9302")
	cycles, ops := 30, 20000
	if v, err := strconv.Atoi(os.Getenv("EGRESS_FLOOR_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	if v, err := strconv.Atoi(os.Getenv("EGRESS_FLOOR_OPS")); err == nil && v > 0 {
		ops = v
	}

	p, err := OpenProbe(cg.Path, DefaultProbeOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := p.Detach(); err != nil {
		b.Fatal(err)
	}
	var learnerHits uint64
	drain := func() {
		if err := p.Drain(func(a Attempt) {
			if a.UID == 4242 {
				learnerHits += a.Hits
			}
		}); err != nil {
			b.Fatal(err)
		}
	}
	emptyEgress := emptyPrograms(b, cg.Path, "egress")
	emptySix := emptyPrograms(b, cg.Path, "connect4", "connect6", "sendmsg4", "sendmsg6", "egress", "ingress")
	variants := []floorVariant{
		{name: "bare", attach: func() error { return nil }, detach: func() error { return nil }},
		{name: "empty-egress", attach: emptyEgress.attach, detach: emptyEgress.detach},
		{name: "empty-six", attach: emptySix.attach, detach: emptySix.detach},
		{name: "learner", attach: func() (err error) {
			p.links, err = cgroupbpf.Attach(cg.Path, p.attachments())
			return err
		}, detach: p.Detach},
	}

	user := lab.As{UID: 4242, GID: 4242, Netns: ns, Cgroup: cg}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := user.Command(ctx, bin, "127.0.0.1:9301", "127.0.0.1:9302")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	block := func(kind string, n int) float64 {
		fmt.Fprintf(stdin, "%s %d\n", kind, n)
		if !lines.Scan() {
			b.Fatalf("floorsend: %v", lines.Err())
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(lines.Text()), 64)
		if err != nil {
			b.Fatalf("floorsend said %q", lines.Text())
		}
		return ns / float64(n)
	}

	kinds := []floorKind{{"udp", ops, false}, {"sendto", ops, true}, {"connect", max(1, ops/13), true}}
	if list := os.Getenv("EGRESS_FLOOR_KINDS"); list != "" {
		kinds = slices.DeleteFunc(kinds, func(k floorKind) bool { return !slices.Contains(strings.Split(list, ","), k.name) })
	}
	// The table goes to stdout: a benchmark's log is cut to a few lines.
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	b.ResetTimer()
	for _, k := range kinds {
		per := map[string][]float64{}
		var made uint64
		learnerHits = 0
		block(k.name, k.n) // warm-up
		for c := range cycles {
			for i := range variants {
				v := variants[(i+c)%len(variants)]
				if err := v.attach(); err != nil {
					b.Fatal(err)
				}
				per[v.name] = append(per[v.name], block(k.name, k.n))
				if err := v.detach(); err != nil {
					b.Fatal(err)
				}
				if v.name == "learner" {
					made += uint64(k.n)
					drain()
				}
			}
		}
		drain()
		logf("%s, %d cycles of %d operations per variant:", k.name, cycles, k.n)
		bare := per["bare"]
		for _, v := range variants {
			ns := per[v.name]
			line := fmt.Sprintf("  %-13s %8.1f ns/op (median; quartiles %.1f-%.1f; least %.1f)", v.name, median(ns), quartile(ns, 1), quartile(ns, 3), slices.Min(ns))
			if v.name != "bare" {
				diff := make([]float64, len(ns))
				ratio := make([]float64, len(ns))
				for i := range ns {
					diff[i] = ns[i] - bare[i]
					ratio[i] = bare[i] / ns[i]
				}
				least := slices.Min(ns) - slices.Min(bare)
				line += fmt.Sprintf("  - bare %+7.1f ns (quartiles %+.1f..%+.1f; least - least %+.1f)  bare/this %.4f (quartiles %.4f-%.4f; least/least %.4f)",
					median(diff), quartile(diff, 1), quartile(diff, 3), least, median(ratio), quartile(ratio, 1), quartile(ratio, 3),
					slices.Min(bare)/slices.Min(ns))
				b.ReportMetric(median(diff), k.name+"-"+v.name+"-ns-over-bare")
				b.ReportMetric(least, k.name+"-"+v.name+"-least-ns-over-bare")
			}
			logf("%s", line)
		}
		if k.exact {
			logf("  learner hits %d, %s made while it was attached %d", learnerHits, k.name, made)
			if learnerHits != made {
				b.Errorf("%s: the learner counted %d hits, %d were made while it was attached", k.name, learnerHits, made)
			}
		}
	}
	st, err := p.Stats()
	if err != nil || st.Lost() != 0 {
		b.Errorf("stats %+v (%v): want nothing lost", st, err)
	}
}

// udpSink binds a UDP socket on addr in ns that nothing reads: datagrams
// past its buffer are dropped there, cheaply (learnbench's sendto sink).
func udpSink(b testing.TB, ns *lab.Netns, addr string) {
	var c net.PacketConn
	if err := lab.InNetns(ns, func() (err error) {
		c, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
}

// emptySet is a set of do-nothing programs and how to attach them.
type emptySet struct {
	progs []*ebpf.Program
	types []ebpf.AttachType
	path  string
	links []link.Link
}

func (e *emptySet) attach() error {
	for i, prog := range e.progs {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: e.path, Attach: e.types[i], Program: prog})
		if err != nil {
			return err
		}
		e.links = append(e.links, l)
	}
	return nil
}

func (e *emptySet) detach() error {
	var first error
	for _, l := range e.links {
		if err := l.Close(); err != nil && first == nil {
			first = err
		}
	}
	e.links = nil
	return first
}

// emptyPrograms loads programs that only return 1 (allow) for the named
// hooks of the cgroup at path.
func emptyPrograms(b testing.TB, path string, hooks ...string) *emptySet {
	all := map[string]struct {
		typ    ebpf.ProgramType
		attach ebpf.AttachType
	}{
		"connect4": {ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
		"connect6": {ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect},
		"sendmsg4": {ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Sendmsg},
		"sendmsg6": {ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Sendmsg},
		"egress":   {ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
		"ingress":  {ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress},
	}
	e := &emptySet{path: path}
	b.Cleanup(func() { _ = e.detach() })
	for _, h := range hooks {
		spec := all[h]
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "empty_" + h, Type: spec.typ, AttachType: spec.attach,
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}, License: "GPL"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { prog.Close() })
		e.progs = append(e.progs, prog)
		e.types = append(e.types, spec.attach)
	}
	return e
}

func median(v []float64) float64 { return quartile(v, 2) }

// quartile is the q-th quartile of v (q 2: the median), by the nearest rank.
func quartile(v []float64, q int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[min(len(s)-1, (len(s)-1)*q/4)]
}
