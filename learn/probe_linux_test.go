//go:build linux

package learn

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
)

// collector gathers what a probe reports.
type collector struct {
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

func startProbe(t *testing.T, cg *lab.Cgroup, opts ProbeOptions, readEvents bool) (*Probe, *collector) {
	t.Helper()
	p, err := OpenProbe(cg.Path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := &collector{}
	if readEvents {
		go p.ReadEvents(func(Attempt) {}, c.add)
	}
	go p.ReadDNS(func(d DNSPacket) { c.mu.Lock(); c.dns = append(c.dns, d); c.mu.Unlock() })
	return p, c
}

// TestDrainCountsEveryAttempt: 2000 TCP connects while the flow map is
// swapped every 5 ms: the drained counts add up to exactly 2000.
func TestDrainCountsEveryAttempt(t *testing.T) {
	lab.Require(t, "bash")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	p, c := startProbe(t, cg, DefaultProbeOptions(), true)

	stop := make(chan struct{})
	done := make(chan struct{})
	swaps := 0
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if err := p.Drain(c.add); err != nil {
					t.Error(err)
					return
				}
				swaps++
			}
		}
	}()
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	user.MustRun(t, "bash", "-c", `for i in $(seq 2000); do exec 3<>/dev/tcp/10.77.0.1/8080 && exec 3>&-; done`)
	close(stop)
	<-done
	if err := p.Drain(c.add); err != nil {
		t.Fatal(err)
	}
	got := c.hits()["4242 tcp 10.77.0.1:8080"]
	if got != 2000 {
		t.Errorf("counted %d connects, want 2000 (map swapped %d times)", got, swaps)
	}
	if swaps < 10 {
		t.Errorf("only %d swaps happened during the connects", swaps)
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.EventsLost != 0 {
		t.Errorf("stats %+v: lost events", st)
	}
}

// TestFullFlowMapFallsBackToRecords: with room for 4 flows, 20 distinct
// destinations are still all counted, through the ring buffer, and the
// fallback is counted.
func TestFullFlowMapFallsBackToRecords(t *testing.T) {
	lab.Require(t, "bash")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ListenUDP(t, pair.Server, ":9999")
	opts := DefaultProbeOptions()
	opts.FlowMapSize = 4
	opts.WakeupBytes = 0
	p, c := startProbe(t, cg, opts, true)
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	user.MustRun(t, "bash", "-c", `for port in $(seq 10001 10020); do echo x > /dev/udp/10.77.0.1/$port; done`)
	time.Sleep(200 * time.Millisecond) // let the reader take the records
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
	if st.MapFull < 16 {
		t.Errorf("map-full fallbacks = %d, want >= 16", st.MapFull)
	}
}

// TestLostRecordsAreCounted: with a one-page ring nobody reads, records
// that do not fit are counted as lost, never silently dropped.
func TestLostRecordsAreCounted(t *testing.T) {
	lab.Require(t, "bash")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ListenUDP(t, pair.Server, ":9999")
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
