//go:build linux

package learn

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
)

// lastFlowShare is how many of the collected hits came from per-CPU
// last-flow entries (the only drained attempts without a socket cookie in
// the default mode), and the executable names those attempts carry.
func (c *collector) lastFlowShare() (hits uint64, exes map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exes = map[string]bool{}
	for _, a := range c.attempts {
		if a.Cookie == 0 {
			hits += a.Hits
			exes[a.Exe] = true
		}
	}
	return hits, exes
}

// TestLastFlowCountsAcrossDrains: two clients at once send unconnected
// datagrams (the sendmsg programs count them) to an IPv4 and an IPv6
// destination, in runs of one flow and alternating, while a swapper
// drains the maps as often as it can; a third client makes TCP connects to
// one destination. Every datagram and connect is counted exactly once:
// most repeats in the CPUs' last-flow entries (the test fails if none
// are), the rest in the flow map, whatever the drains cut. The entries'
// attempts name the process as the flow map's do.
func TestLastFlowCountsAcrossDrains(t *testing.T) {
	lab.Require(t, "go", "bash")
	bin := buildUDPSend(t)
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeUDP(t, pair.Server, "udp", ":9201", nil)
	lab.ServeUDP(t, pair.Server, "udp", ":9202", nil)
	lab.ServeHTTP(t, pair.Server, ":8080")
	v4 := lab.ServerIP4 + ":9201"
	v6 := "[" + lab.ServerIP6 + "]:9202"
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	p, c := startProbe(t, cg, DefaultProbeOptions(), true)

	stopDrains := drainConstantly(t, p, c)
	alternating := make([]string, 0, 200)
	for range 100 {
		alternating = append(alternating, "sendto,udp4,"+v4+",3", "sendto,udp,"+v6+",2")
	}
	var wg sync.WaitGroup
	outs := make([]string, 3)
	send := func(i int, specs ...string) {
		out, err := user.Run(append([]string{bin}, specs...)...)
		if err != nil {
			t.Errorf("udpsend: %v", err)
		}
		outs[i] = out
	}
	wg.Go(func() { send(0, "sendto,udp4,"+v4+",20000", "sendto,udp,"+v6+",10000") })
	wg.Go(func() { send(1, append(alternating, "sendto,udp4,"+v4+",5000")...) })
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := user.Command(ctx, "bash", "-c",
			`for i in $(seq 500); do exec 3<>/dev/tcp/`+lab.ServerIP4+`/8080 && exec 3>&- || exit 1; done; echo done`).Output()
		if err != nil {
			t.Errorf("connects: %v", err)
		}
		outs[2] = string(out)
	})
	wg.Wait()
	t.Logf("%d drains during the sends", stopDrains())
	c.stopReaders(t, p)
	if err := p.Drain(c.add); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(outs[0]) != "sent 30000" || strings.TrimSpace(outs[1]) != "sent 5500" || strings.TrimSpace(outs[2]) != "done" {
		t.Fatalf("clients: %q", outs)
	}
	got := c.hits()
	want := map[string]uint64{
		"4242 udp " + v4:                      20000 + 300 + 5000,
		"4242 udp " + v6:                      10000 + 200,
		"4242 tcp " + lab.ServerIP4 + ":8080": 500,
	}
	if !maps.Equal(got, want) {
		t.Errorf("hits %v, want %v", got, want)
	}
	last, exes := c.lastFlowShare()
	t.Logf("%d of %d hits counted in last-flow entries, executables %v", last, 20000+300+5000+10000+200+500, exes)
	if last == 0 {
		t.Error("no hit was counted in a last-flow entry")
	}
	for exe := range exes {
		if exe != "udpsend" && exe != "bash" {
			t.Errorf("a last-flow entry names executable %q, want udpsend or bash", exe)
		}
	}
	if st, err := p.Stats(); err != nil || st.Lost() != 0 || st.MapFull != 0 {
		t.Errorf("stats %+v (%v), want nothing lost", st, err)
	}
}

// TestLastFlowPerEventOff: with in-kernel counting off, no last-flow map
// is made and every attempt is a record of its own.
func TestLastFlowPerEventOff(t *testing.T) {
	lab.Require(t, "go")
	bin := buildUDPSend(t)
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeUDP(t, pair.Server, "udp", ":9201", nil)
	v4 := lab.ServerIP4 + ":9201"
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	opts := DefaultProbeOptions()
	opts.PerEvent = true
	p, c := startProbe(t, cg, opts, true)
	if p.last != nil {
		t.Fatal("a last-flow map with in-kernel counting off")
	}
	out := user.MustRun(t, bin, "sendto,udp4,"+v4+",300")
	c.stopReaders(t, p)
	if err := p.Drain(c.add); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "sent 300" {
		t.Fatalf("udpsend: %q", out)
	}
	if got := c.hits()["4242 udp "+v4]; got != 300 {
		t.Errorf("hits %d, want 300", got)
	}
	if n := len(c.attempts); n != 300 {
		t.Errorf("%d attempts delivered, want 300 records", n)
	}
}
