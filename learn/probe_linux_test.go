//go:build linux

package learn

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/egresskit/egress/internal/lab"
)

// collector gathers what a probe reports.
type collector struct {
	readers  errgroup.Group
	mu       sync.Mutex
	attempts []Attempt
	dns      []DNSPacket
}

func (c *collector) add(a Attempt) { c.mu.Lock(); c.attempts = append(c.attempts, a); c.mu.Unlock() }

// hits sums the hits per (uid, proto, ip, port).
func (c *collector) hits() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]uint64{}
	for _, a := range c.attempts {
		m[fmt.Sprintf("%d %s %s", a.UID, ProtoName(a.Proto), netip.AddrPortFrom(a.IP, a.Port))] += a.Hits
	}
	return m
}

// drainConstantly drains p into c as fast as it can, on a goroutine of
// its own, until the function it gives is called; that function gives
// how many drains were made.
func drainConstantly(t *testing.T, p *Probe, c *collector) (stop func() int) {
	done := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				swapped <- n
				return
			default:
			}
			if err := p.Drain(c.add); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	return func() int {
		close(done)
		return <-swapped
	}
}

// startProbe opens a probe on cg with readers running; stopReaders ends
// them once they have delivered every record.
func startProbe(t *testing.T, cg *lab.Cgroup, opts ProbeOptions, readEvents bool) (*Probe, *collector) {
	t.Helper()
	p, err := OpenProbe(cg.Path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := &collector{}
	if readEvents {
		c.readers.Go(func() error { return p.ReadEvents(func(Attempt) {}, c.add) })
	}
	c.readers.Go(func() error {
		return p.ReadDNS(func(d DNSPacket) { c.mu.Lock(); c.dns = append(c.dns, d); c.mu.Unlock() })
	})
	return p, c
}

// stopReaders detaches the probe and waits until its readers have
// delivered every record: the signal that the collector holds them all.
func (c *collector) stopReaders(t *testing.T, p *Probe) {
	t.Helper()
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	p.StopReaders()
	if err := c.readers.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestDrainCountsEveryAttempt: 2000 TCP connects in 20 batches. The flow
// map is swapped by a concurrent swapper as often as it can, and once
// after every batch (the client waits for it): after each of those
// drains the drained counts add up to exactly the connects made so far.
// No count is lost or counted twice across the swaps, and the number of
// swaps does not depend on the machine's speed.
func TestDrainCountsEveryAttempt(t *testing.T) {
	const batches, perBatch = 20, 100
	lab.Require(t, "bash")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	p, c := startProbe(t, cg, DefaultProbeOptions(), true)

	stop := make(chan struct{})
	var swapper errgroup.Group
	var swaps atomic.Int64
	swapper.Go(func() error {
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			if err := p.Drain(c.add); err != nil {
				return err
			}
			swaps.Add(1)
		}
	})
	defer func() {
		close(stop)
		if err := swapper.Wait(); err != nil {
			t.Error(err)
		}
	}()

	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := user.Command(ctx, "bash", "-c", fmt.Sprintf(`for b in $(seq %d); do read -r go || exit 1; `+
		`for i in $(seq %d); do exec 3<>/dev/tcp/10.77.0.1/8080 && exec 3>&-; done; echo "batch $b"; done`, batches, perBatch))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	for b := 1; b <= batches; b++ {
		fmt.Fprintln(stdin, "go")
		if !lines.Scan() || lines.Text() != fmt.Sprintf("batch %d", b) {
			t.Fatalf("batch %d: the client said %q (%v)", b, lines.Text(), lines.Err())
		}
		if err := p.Drain(c.add); err != nil {
			t.Fatal(err)
		}
		if got := c.hits()["4242 tcp 10.77.0.1:8080"]; got != uint64(b*perBatch) {
			t.Fatalf("after batch %d: counted %d connects, want %d (%d concurrent swaps so far)", b, got, b*perBatch, swaps.Load())
		}
	}
	t.Logf("%d batches, %d concurrent swaps", batches, swaps.Load())
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.EventsLost != 0 || st.MapFull != 0 {
		t.Errorf("stats %+v: lost events or a full map", st)
	}
}

// udpLab is a pair of namespaces whose server listens on UDP 9999, and a
// cgroup for the clients.
func udpLab(t *testing.T) (*lab.Pair, *lab.Cgroup) {
	lab.Require(t, "bash")
	pair := lab.NewPair(t)
	lab.ListenUDP(t, pair.Server, ":9999")
	return pair, lab.NewCgroup(t)
}

// TestFullFlowMapFallsBackToRecords: with room for 4 flows, 20 distinct
// destinations are still all counted, through the ring buffer, and the
// fallback is counted.
func TestFullFlowMapFallsBackToRecords(t *testing.T) {
	pair, cg := udpLab(t)
	opts := DefaultProbeOptions()
	opts.FlowMapSize = 4
	opts.WakeupBytes = 0
	p, c := startProbe(t, cg, opts, true)
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	user.MustRun(t, "bash", "-c", `for port in $(seq 10001 10020); do echo x > /dev/udp/10.77.0.1/$port; done`)
	c.stopReaders(t, p)
	if err := p.Drain(c.add); err != nil {
		t.Fatal(err)
	}
	h := c.hits()
	for port := 10001; port <= 10020; port++ {
		if got := h[fmt.Sprintf("4242 udp 10.77.0.1:%d", port)]; got != 1 {
			t.Errorf("port %d: %d hits, want 1", port, got)
		}
	}
	st, _ := p.Stats()
	if st.MapFull != 16 {
		t.Errorf("map-full fallbacks = %d, want 16", st.MapFull)
	}
}

// TestLostRecordsAreCounted: with a one-page ring nobody reads, records
// that do not fit are counted as lost, never silently dropped.
func TestLostRecordsAreCounted(t *testing.T) {
	pair, cg := udpLab(t)
	opts := DefaultProbeOptions()
	opts.PerEvent = true
	opts.EventRingBytes = 4096
	p, _ := startProbe(t, cg, opts, false)
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	user.MustRun(t, "bash", "-c", `for i in $(seq 500); do echo x > /dev/udp/10.77.0.1/9999; done`)
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// 4096 bytes hold about 40 records of 96 bytes.
	if st.EventsLost < 400 || st.EventsLost > 500 {
		t.Errorf("lost = %d, want between 400 and 500 of 500 attempts", st.EventsLost)
	}
}
