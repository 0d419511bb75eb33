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

// buildUDPSend builds testdata/udpsend where every user may run it.
func buildUDPSend(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(lab.PublicDir(t, "udpsend"), "udpsend")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/udpsend").CombinedOutput(); err != nil {
		t.Fatalf("build udpsend: %v\n%s", err, out)
	}
	return bin
}

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
