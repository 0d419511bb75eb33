//go:build linux

package learn

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestLearnRealClients runs the learner on a child cgroup while real
// clients (curl, dig, socat, bash) reach servers in another namespace as
// different users, then checks what the store says.
func TestLearnRealClients(t *testing.T) {
	lab.Require(t, "curl", "dig", "socat", "dnsmasq", "bash")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ListenUDP(t, pair.Server, ":9999")
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "web.lab", IPs: []string{lab.ServerIP4, lab.ServerIP6}, TTL: 120},
		lab.DNSRecord{Name: "mid.lab", Target: "web.lab"},
		lab.DNSRecord{Name: "alias.lab", Target: "mid.lab"},
	)

	db := filepath.Join(t.TempDir(), "baseline.db")
	run := startRun(t, Config{
		DB: db, Cgroup: cg.Path, Flush: 200 * time.Millisecond, Drain: 100 * time.Millisecond,
		Filter: Filter{Loopback: true}, Probe: DefaultProbeOptions(),
	})

	clients(t, pair.Client, cg, lab.NewCgroup(t))
	// Everything the clients did is in the kernel once they have exited;
	// stopping writes all of it.
	sum := run.stop(t)
	flows, snap := flowsOf(t, db)
	want := func(key string, procs ...string) store.Flow {
		t.Helper()
		return wantFlow(t, flows, cg, key, procs...)
	}
	nobody4 := want("65534 tcp 10.77.0.1:8080", "curl")
	nobody6 := want("65534 tcp [fd77::1]:8080", "curl")
	want("65534 udp 10.77.0.1:53", "dig", "curl") // dig's thread is isc-net-0000: the process name is used
	want("0 tcp 10.77.0.1:8080", "curl")
	want("4242 tcp 10.77.0.1:8080", "socat") // v4-mapped on an AF_INET6 socket
	want("4242 tcp [fd77::1]:8080", "socat")
	want("4242 udp 10.77.0.1:9999", "socat") // unconnected sendto
	want("4242 udp 10.77.0.1:9998", "socat") // sendto ::ffff:a.b.c.d
	want("4242 udp [fd77::1]:9996", "socat")
	want("4242 udp 10.77.0.1:9997", "socat") // connected UDP

	for _, f := range []store.Flow{nobody4, nobody6} {
		for _, n := range []string{"alias.lab", "mid.lab", "web.lab"} {
			if !slices.Contains(f.Hostnames, n) {
				t.Errorf("flow to %s: hostnames %v lack %s", f.IP, f.Hostnames, n)
			}
		}
	}
	for k := range flows {
		switch {
		case strings.HasPrefix(k, "4343 "):
			t.Errorf("a process outside the cgroup was recorded: %s", k)
		case strings.Contains(k, "127.0.0.1"):
			t.Errorf("loopback recorded: %s", k)
		case strings.HasPrefix(k, "65534 udp") && strings.HasSuffix(k, ":8080"):
			t.Errorf("getaddrinfo's probe socket (connected, never sent) recorded: %s", k)
		}
	}
	checkDNSEntry(t, snap)
	if len(snap.Runs) != 1 || !snap.Runs[0].Finished || snap.Runs[0].Events == 0 {
		t.Errorf("runs = %+v", snap.Runs)
	}
	if sum.Probe.Lost() != 0 || snap.Runs[0].LostEvents != 0 {
		t.Errorf("lost events: probe %+v, run %+v", sum.Probe, snap.Runs[0])
	}
	// dig and curl (getaddrinfo: A and AAAA) asked, and nothing else
	// answered: every answer matched its query.
	if d := sum.Probe.DNS; d.Matched < 3 || d.Ignored() != 0 || snap.Runs[0].DNS != d {
		t.Errorf("dns: probe %+v, run %+v", d, snap.Runs[0].DNS)
	}
}

// clients reach the servers as nobody, root and uid 4242 from cg, and as
// uid 4343 from the cgroup outside: curl and dig through names, socat to
// IPv4, IPv6 and IPv4-mapped addresses, TCP, connected and unconnected
// UDP.
func clients(t *testing.T, ns *lab.Netns, cg, outside *lab.Cgroup) {
	nobody := lab.As{UID: 65534, GID: 65534, Netns: ns, Cgroup: cg}
	root := lab.As{UID: 0, GID: 0, Netns: ns, Cgroup: cg}
	other := lab.As{UID: 4242, GID: 4242, Netns: ns, Cgroup: cg}
	stranger := lab.As{UID: 4343, GID: 4343, Netns: ns, Cgroup: outside}

	if out := nobody.MustRun(t, "dig", "+short", "@"+lab.ServerIP4, "alias.lab"); !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig alias.lab: %q", out)
	}
	nobody.MustRun(t, "curl", "-sS", "-4", "http://alias.lab:8080/")
	nobody.MustRun(t, "curl", "-sS", "-6", "http://alias.lab:8080/")
	_, _ = nobody.Run("curl", "-sS", "--max-time", "2", "http://127.0.0.1:1/") // refused; only the attempt matters
	root.MustRun(t, "curl", "-sS", "-4", "http://10.77.0.1:8080/")
	other.MustRun(t, "socat", "-u", "OPEN:/dev/null", "TCP6:[::ffff:10.77.0.1]:8080")
	other.MustRun(t, "socat", "-u", "OPEN:/dev/null", "TCP6:[fd77::1]:8080")
	other.MustRun(t, "bash", "-c", "echo x | socat -u - UDP4-SENDTO:10.77.0.1:9999")
	other.MustRun(t, "bash", "-c", "echo x | socat -u - UDP6-SENDTO:[::ffff:10.77.0.1]:9998")
	other.MustRun(t, "bash", "-c", "echo x | socat -u - UDP6-SENDTO:[fd77::1]:9996")
	other.MustRun(t, "bash", "-c", "echo x | socat -u - UDP4:10.77.0.1:9997")
	stranger.MustRun(t, "curl", "-sS", "-4", "http://10.77.0.1:8080/")

}

// wantFlow checks that the flow of key was recorded with hits, a seen
// interval, the processes and cg.
func wantFlow(t *testing.T, flows map[string]store.Flow, cg *lab.Cgroup, key string, procs ...string) store.Flow {
	t.Helper()
	f, ok := flows[key]
	if !ok {
		t.Errorf("flow %s not recorded", key)
		return f
	}
	if f.Hits == 0 || f.FirstSeen.IsZero() || f.LastSeen.Before(f.FirstSeen) {
		t.Errorf("flow %s: hits %d, seen %v..%v", key, f.Hits, f.FirstSeen, f.LastSeen)
	}
	for _, p := range procs {
		if !slices.Contains(f.Processes, p) {
			t.Errorf("flow %s: processes %v lack %s", key, f.Processes, p)
		}
	}
	cgName := strings.TrimPrefix(cg.Path, filepath.Dir(cg.Path))
	if !slices.Contains(f.Cgroups, cgName) {
		t.Errorf("flow %s: cgroups %v lack %s", key, f.Cgroups, cgName)
	}
	return f
}

// checkDNSEntry: the server's address was resolved from web.lab by
// nobody, with its TTL.
func checkDNSEntry(t *testing.T, snap *store.Snapshot) {
	var dns4 *store.DNSEntry
	for i, e := range snap.DNS {
		if e.IP == netip.MustParseAddr(lab.ServerIP4) {
			dns4 = &snap.DNS[i]
		}
	}
	if dns4 == nil {
		t.Fatalf("no DNS entry for %s: %+v", lab.ServerIP4, snap.DNS)
	}
	var sawWeb bool
	for _, n := range dns4.Names {
		if n.Name == "web.lab" {
			sawWeb = true
			if n.TTL == 0 || n.TTL > 120 || !slices.Contains(n.UIDs, 65534) {
				t.Errorf("dns web.lab: %+v", n)
			}
		}
	}
	if !sawWeb {
		t.Errorf("dns entry lacks web.lab: %+v", dns4.Names)
	}

}
