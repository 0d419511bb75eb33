//go:build linux

package learn

import (
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
)

// Unconnected UDP counted at the egress packet (ProbeOptions.UDPAtEgress,
// udp_unconnected: egress) against the sendmsg4/6 programs: the same
// flows, hits and processes.

// buildTestdata builds the command testdata/NAME where every user may
// run it.
func buildTestdata(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(lab.PublicDir(t, name), name)
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/"+name).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// buildUDPSend builds testdata/udpsend.
func buildUDPSend(t *testing.T) string { return buildTestdata(t, "udpsend") }

// udpFlow is what a test compares of a stored flow.
type udpFlow struct {
	Hits      uint64
	Processes string
	Cgroups   string
}

// TestUnconnectedUDPAtEgressSameFlows: one client sends unconnected
// datagrams to several IPv4 and IPv6 destinations (from an AF_INET socket,
// and from a dual-stack AF_INET6 socket, also to an IPv4 address), and
// datagrams through connected sockets. Learnt with the sendmsg programs
// and with the egress program, the store holds the same flows with the
// same hits (one a datagram for unconnected sockets, one a connected
// socket: not counted twice), processes and cgroups, and nothing is lost;
// in the egress mode the sendmsg programs are not attached.
func TestUnconnectedUDPAtEgressSameFlows(t *testing.T) {
	lab.Require(t, "go", "bpftool")
	bin := buildUDPSend(t)
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	v4 := func(port int) string { return fmt.Sprintf("%s:%d", lab.ServerIP4, port) }
	v6 := func(port int) string { return fmt.Sprintf("[%s]:%d", lab.ServerIP6, port) }
	for port := 9101; port <= 9107; port++ {
		lab.ServeUDP(t, pair.Server, "udp", fmt.Sprintf(":%d", port), nil)
	}
	specs := []string{
		"sendto,udp4," + v4(9101) + ",3",
		"sendto,udp4," + v4(9102) + ",2",
		"sendto,udp," + v6(9103) + ",4",
		"sendto,udp," + v4(9104) + ",2",  // ::ffff:10.77.0.1 from an AF_INET6 socket
		"sendto,udp4," + v4(9101) + ",2", // the first destination again
		"sendto,udp," + v6(9101) + ",1",
		"connect,udp4," + v4(9105) + ",5",
		"connect,udp," + v6(9106) + ",3",
		"connect,udp4," + v4(9105) + ",2", // a second connected socket, same flow
	}
	want := map[string]uint64{
		"4242 udp " + v4(9101): 5,
		"4242 udp " + v4(9102): 2,
		"4242 udp " + v6(9103): 4,
		"4242 udp " + v4(9104): 2,
		"4242 udp " + v6(9101): 1,
		"4242 udp " + v4(9105): 2,
		"4242 udp " + v6(9106): 1,
	}
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}

	got := map[string]map[string]udpFlow{}
	for _, atEgress := range []bool{false, true} {
		mode := map[bool]string{false: "sendmsg", true: "egress"}[atEgress]
		db := filepath.Join(t.TempDir(), mode+".db")
		opts := DefaultProbeOptions()
		opts.UDPAtEgress = atEgress
		r := startRun(t, Config{DB: db, Cgroup: cg.Path, Flush: time.Hour, Probe: opts, NoPresentedNames: true})
		attached := lab.MustRun(t, "bpftool", "cgroup", "show", cg.Path)
		if has := strings.Contains(attached, "sendmsg"); has == atEgress {
			t.Errorf("%s: sendmsg programs attached: %v\n%s", mode, has, attached)
		}
		if out := user.MustRun(t, append([]string{bin}, specs...)...); strings.TrimSpace(out) != "sent 24" {
			t.Fatalf("%s: udpsend: %q", mode, out)
		}
		sum := r.stop(t)
		if sum.Probe.Lost() != 0 || sum.Probe.MapFull != 0 {
			t.Errorf("%s: probe stats %+v, want nothing lost", mode, sum.Probe)
		}
		flows, _ := flowsOf(t, db)
		got[mode] = map[string]udpFlow{}
		for k, f := range flows {
			got[mode][k] = udpFlow{Hits: f.Hits, Processes: strings.Join(f.Processes, ","), Cgroups: strings.Join(f.Cgroups, ",")}
			if want[k] == 0 {
				t.Errorf("%s: unexpected flow %s (%d hits)", mode, k, f.Hits)
			}
		}
		for k, n := range want {
			f, ok := got[mode][k]
			if !ok || f.Hits != n {
				t.Errorf("%s: flow %s: %+v (recorded %v), want %d hits", mode, k, f, ok, n)
			}
			if !ok || f.Processes != "udpsend" {
				t.Errorf("%s: flow %s: processes %q, want udpsend", mode, k, f.Processes)
			}
		}
	}
	if !maps.Equal(got["sendmsg"], got["egress"]) {
		keys := slices.Sorted(maps.Keys(got["sendmsg"]))
		for _, k := range keys {
			t.Logf("%s: sendmsg %+v, egress %+v", k, got["sendmsg"][k], got["egress"][k])
		}
		t.Error("the two modes stored different flows")
	}
}

// TestUDPAtEgressDNS: with unconnected UDP counted at the egress packet,
// a DNS query from an unconnected socket (no sendmsg program marks it;
// the socket sent a datagram elsewhere first) and one from a connected
// socket are still seen, their answers name the victim's flow, and the
// datagrams' flows are counted once each.
func TestUDPAtEgressDNS(t *testing.T) {
	for _, connect := range []bool{false, true} {
		t.Run(map[bool]string{false: "unconnected", true: "connected"}[connect], func(t *testing.T) {
			d := newDNSLab(t)
			lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"egress.lab": nil}))
			lab.ListenUDP(t, d.pair.Server, lab.ServerIP4+":9999")
			opts := DefaultProbeOptions()
			opts.UDPAtEgress = true
			r := startRun(t, d.config(opts))
			args := []string{"ask", "-server", lab.ServerIP4 + ":53", "-name", "egress.lab", "-id", "41"}
			want := []string{"65534 udp " + lab.ServerIP4 + ":53"}
			if connect {
				args = append(args, "-connect")
			} else {
				args = append(args, "-before", lab.ServerIP4+":9999")
				want = append(want, "65534 udp "+lab.ServerIP4+":9999")
			}
			p := startPeer(t, d.victim, d.bin, args...)
			p.ready()
			p.expect("got " + lab.ServerIP4 + ":53 41")
			p.close()
			d.victimNamedOnly(t, r, 1, "egress.lab")
			flows, _ := flowsOf(t, d.db)
			for _, k := range want {
				if f := flows[k]; f.Hits != 1 {
					t.Errorf("flow %s has %d hits, want 1", k, f.Hits)
				}
			}
		})
	}
}

// TestOpenProbeFailsCleanly: a probe that cannot be loaded (an event ring
// that is no power of two) returns an error; it closed a nil probe and
// panicked.
func TestOpenProbeFailsCleanly(t *testing.T) {
	cg := lab.NewCgroup(t)
	p, err := OpenProbe(cg.Path, ProbeOptions{EventRingBytes: 5000})
	if err == nil {
		p.Close()
		t.Fatal("a 5000-byte event ring was accepted")
	}
	t.Log(err)
}

// TestUDPAtEgressCountsAcrossDrains: unconnected datagrams counted at the
// egress packet, most of them repeats counted in the sockets' slots, while
// another goroutine swaps and drains the flow and slot maps as fast as it
// can: the drained hits add up to exactly the datagrams sent, per flow.
// Then more sockets than there are slots in one interval (each sends two
// datagrams): those without a slot count in the flow map, none is lost.
func TestUDPAtEgressCountsAcrossDrains(t *testing.T) {
	lab.Require(t, "go")
	bin := buildUDPSend(t)
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeUDP(t, pair.Server, "udp", ":9201", nil)
	lab.ServeUDP(t, pair.Server, "udp", ":9202", nil)
	v4 := lab.ServerIP4 + ":9201"
	v6 := "[" + lab.ServerIP6 + "]:9202"
	user := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	opts := DefaultProbeOptions()
	opts.UDPAtEgress = true
	p, c := startProbe(t, cg, opts, true)

	stopDrains := drainConstantly(t, p, c)
	out := user.MustRun(t, bin, "sendto,udp4,"+v4+",20000", "sendto,udp,"+v6+",10000", "sendto,udp4,"+v4+",5000")
	t.Logf("%d drains during the sends", stopDrains())
	// Slots are per interval: with no drain, the sockets outnumber them.
	out2 := user.MustRun(t, bin, "sockets,udp,"+v6+",5000")
	c.stopReaders(t, p)
	if err := p.Drain(c.add); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "sent 35000" || strings.TrimSpace(out2) != "sent 10000" {
		t.Fatalf("udpsend: %q, %q", out, out2)
	}
	got := c.hits()
	want := map[string]uint64{"4242 udp " + v4: 25000, "4242 udp " + v6: 20000}
	if !maps.Equal(got, want) {
		t.Errorf("hits %v, want %v", got, want)
	}
	if st, err := p.Stats(); err != nil || st.Lost() != 0 {
		t.Errorf("stats %+v (%v), want nothing lost", st, err)
	}
}
