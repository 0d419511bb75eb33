//go:build linux

package namecheck_test

import (
	"encoding/hex"
	"fmt"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
)

// The client side of the benchmarks (TestMain, NC_CLIENT=1):
//
//	storm N ADDR HEX   N connections, each sends the bytes HEX (a
//	                   ClientHello), waits for the server's one byte, closes
//	bulk N ADDR HEX    one connection: HEX, the server's byte, then N bytes;
//	                   the server says when it has read them all
//
// Each prints the nanoseconds it took.
func runBench(mode string, n int, addr string, first []byte) (time.Duration, error) {
	start := time.Now()
	switch mode {
	case "storm":
		one := make([]byte, 1)
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return 0, err
			}
			if _, err := c.Write(first); err != nil {
				return 0, err
			}
			if _, err := io.ReadFull(c, one); err != nil {
				return 0, err
			}
			c.Close()
		}
	case "bulk":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		one := make([]byte, 1)
		if _, err := c.Write(first); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, one); err != nil {
			return 0, err
		}
		start = time.Now()
		buf := make([]byte, 256<<10)
		for left := n; left > 0; left -= len(buf) {
			if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
				return 0, err
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadFull(c, one); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("mode %q", mode)
	}
	return time.Since(start), nil
}

// benchServer answers each connection's first bytes with one byte, then
// reads to the end and answers one more byte.
func benchServer(b *testing.B, l *nlab, port string) string {
	var ln net.Listener
	addr := net.JoinHostPort(lab.ServerIP4, port)
	if err := lab.InNetns(l.pair.Server, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				if _, err := c.Read(buf); err != nil {
					return
				}
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				_, _ = c.Write([]byte{2})
			}()
		}
	}()
	return addr
}

// BenchmarkNameCheck measures, on a veth pair and in a child cgroup, a
// storm of connections that each send a ClientHello and wait for the
// server's first byte, and the throughput of one connection after its
// first segment: with the program detached (off), attached with the
// destination not name-checked (unchecked), and name-checked in enforce
// (the name allowed). Rounds alternate, each mode first in turn; the medians and their ratios to
// off are reported. Figures only, no assertion: run it with
// go test -run '^$' -bench NameCheck -benchtime 1x ./namecheck/ (root).
func BenchmarkNameCheck(b *testing.B) {
	l := newBenchLab(b)
	addr := benchServer(b, l, "8443")
	hello := hex.EncodeToString(clientHello("name1.lab"))
	ip := netip.MustParseAddr(lab.ServerIP4)
	modes := []string{"off", "unchecked", "enforce"}
	set := func(mode string) {
		var dests []namecheck.Dest
		switch mode {
		case "unchecked":
			dests = []namecheck.Dest{{UID: userA, IP: ip, Proto: 6, Port: 9999, Mode: namecheck.Enforce, Names: []string{"name1.lab"}}}
		case "enforce":
			dests = []namecheck.Dest{{UID: userA, IP: ip, Proto: 6, Port: 8443, Mode: namecheck.Enforce, Names: []string{"name1.lab"}}}
		}
		if err := l.nc.Set(dests); err != nil {
			b.Fatal(err)
		}
	}
	const conns, bulk, rounds = 3000, 1 << 30, 7
	storm := map[string][]float64{}
	tput := map[string][]float64{}
	runNs := map[string][]float64{} // the program's mean run time
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	for range b.N {
		for r := 0; r < rounds; r++ {
			for i := range modes {
				m := modes[(i+r)%len(modes)] // each mode goes first in turn
				if m == "off" {
					l.detach(b)
				} else {
					l.attach(b)
					set(m)
				}
				d := l.benchRun(b, "storm", conns, addr, hello)
				storm[m] = append(storm[m], float64(conns)/d.Seconds())
				if m == "enforce" {
					if s, err := l.nc.Stats(); err != nil || s.Passed < conns {
						b.Fatalf("the storm's names were not checked: %+v, %v", s, err)
					}
				}
				if m != "off" {
					runs, total, err := l.nc.RunStats() // of this round's program: attached anew
					if err != nil || runs == 0 {
						b.Fatalf("program stats: %d runs, %v", runs, err)
					}
					runNs[m] = append(runNs[m], float64(total.Nanoseconds())/float64(runs))
				}
				d = l.benchRun(b, "bulk", bulk, addr, hello)
				l.detach(b) // the next round attaches a fresh program
				tput[m] = append(tput[m], float64(bulk)*8/d.Seconds()/1e9)
			}
		}
	}
	for _, m := range modes {
		cs, gb := median(storm[m]), median(tput[m])
		b.Logf("%-9s storm %8.0f conn/s (ratio %.3f) %v   bulk %6.2f Gbit/s (ratio %.3f) %v", m, cs, cs/median(storm["off"]), round(storm[m]),
			gb, gb/median(tput["off"]), round(tput[m]))
		if m != "off" {
			ns := median(runNs[m])
			// A storm connection sends about 5 packets (SYN, ACK, data,
			// FIN, ACK): the program's share of its time.
			b.Logf("%-9s program %.0f ns a packet (median of rounds %v): ~%.2f%% of a storm connection's %.0f us", m, ns, round(runNs[m]),
				100*5*ns/(1e9/median(storm["off"])), 1e6/median(storm["off"]))
			b.ReportMetric(ns, m+"-ns/packet")
		}
		b.ReportMetric(cs/median(storm["off"]), m+"-storm-ratio")
		b.ReportMetric(gb/median(tput["off"]), m+"-bulk-ratio")
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func round(v []float64) []string {
	var out []string
	for _, x := range v {
		out = append(out, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return out
}

func (l *nlab) benchRun(b *testing.B, mode string, n int, addr, hello string) time.Duration {
	out, err := l.as().Run("env", "NC_CLIENT=1", l.client, "bench-"+mode, strconv.Itoa(n), addr, hello)
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		b.Fatalf("bench client: %q", out)
	}
	return time.Duration(ns)
}
