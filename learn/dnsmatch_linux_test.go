//go:build linux

package learn

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/internal/lab"
)

// answerNames answers A queries for names with the lab server's address
// and leaves every other query unanswered. A name whose channel is set
// is answered once the channel closes.
func answerNames(names map[string]chan struct{}) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		if len(r.Question) != 1 {
			return
		}
		name := strings.TrimSuffix(r.Question[0].Name, ".")
		wait, ok := names[name]
		if !ok {
			return
		}
		if wait != nil {
			<-wait
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, lab.A(name, lab.ServerIP4, 60))
		_ = w.WriteMsg(m)
	}
}

// forged is a DNS answer to (id, name): name CNAME cname (when set), then
// an A record of the lab server's address.
func forged(t *testing.T, id uint16, name, cname string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Id, m.Response = id, true
	owner := name
	if cname != "" {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300}, Target: dns.Fqdn(cname)})
		owner = cname
	}
	m.Answer = append(m.Answer, lab.A(owner, lab.ServerIP4, 300))
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dnsLab is a client and a server namespace, a learner on a child cgroup,
// a victim and an attacker (two users in that cgroup, in the client
// namespace, where unprivileged users may bind port 53, as in a Docker
// container), and the dnspeer helper.
type dnsLab struct {
	pair             *lab.Pair
	cg               *lab.Cgroup
	db               string
	bin              string
	victim, attacker lab.As
}

func newDNSLab(t *testing.T) *dnsLab {
	t.Helper()
	lab.Require(t, "curl", "sysctl", "go")
	d := &dnsLab{pair: lab.NewPair(t), cg: lab.NewCgroup(t), bin: buildPeer(t)}
	d.db = filepath.Join(t.TempDir(), "baseline.db")
	lab.MustRun(t, "ip", "netns", "exec", d.pair.Client.Name, "sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=0")
	lab.ServeHTTP(t, d.pair.Server, ":8080")
	d.victim = lab.As{UID: 65534, GID: 65534, Netns: d.pair.Client, Cgroup: d.cg}
	d.attacker = lab.As{UID: 4242, GID: 4242, Netns: d.pair.Client, Cgroup: d.cg}
	return d
}

// config is a learner that writes only when it stops, so that every DNS
// observation is in the store before the flows that take names from it.
func (d *dnsLab) config(opts ProbeOptions) Config {
	return Config{DB: d.db, Cgroup: d.cg.Path, Flush: time.Hour, Filter: Filter{Loopback: true}, Probe: opts}
}

// forge sends a forged answer as the attacker.
func (d *dnsLab) forge(t *testing.T, from string, to string, id uint16, name, cname string) {
	t.Helper()
	args := []string{"forge", "-from", from, "-to", to, "-id", fmt.Sprint(id), "-name", name, "-a", lab.ServerIP4}
	if cname != "" {
		args = append(args, "-cname", cname)
	}
	d.attacker.MustRun(t, append([]string{d.bin}, args...)...)
}

// victimNames connects to the lab server as the victim, stops the learner
// and returns the names the victim's flow got.
func (d *dnsLab) victimNames(t *testing.T, r *running) ([]string, *Summary) {
	t.Helper()
	d.victim.MustRun(t, "curl", "-sS", "-4", "http://"+lab.ServerIP4+":8080/")
	sum := r.stop(t)
	flows, snap := flowsOf(t, d.db)
	f, ok := flows["65534 tcp "+lab.ServerIP4+":8080"]
	if !ok {
		t.Fatal("the victim's flow was not recorded")
	}
	for _, e := range snap.DNS {
		for _, n := range e.Names {
			t.Logf("dns %s: %s uids %v", e.IP, n.Name, n.UIDs)
		}
	}
	t.Logf("dns stats %+v", sum.Probe.DNS)
	return f.Hostnames, sum
}

// victimNamedOnly connects as the victim and stops the learner (see
// victimNames), and checks that the victim's flow has exactly the names
// want and that matched answers were used, none ignored.
func (d *dnsLab) victimNamedOnly(t *testing.T, r *running, matched uint64, want ...string) {
	t.Helper()
	names, sum := d.victimNames(t, r)
	if !slices.Equal(names, want) {
		t.Errorf("the victim's flow has names %v, want only %v", names, want)
	}
	if s := sum.Probe.DNS; s.Matched != matched || s.Ignored() != 0 {
		t.Errorf("dns stats %+v, want %d answers used, none ignored", s, matched)
	}
}

// TestForgedDNSAnswersAttachNoNames: another user of the cgroup sends
// forged answers from port 53 to the victim's sockets: unsolicited, from
// another server than the one asked, with a wrong id, for another
// question, and a replay of a real answer with more names. The victim's
// flow gets only the name it really resolved, and each forged answer is
// counted by reason.
func TestForgedDNSAnswersAttachNoNames(t *testing.T) {
	d := newDNSLab(t)
	srv := lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"real.lab": nil}))
	r := startRun(t, d.config(DefaultProbeOptions()))
	client := func(port int) string { return fmt.Sprintf("%s:%d", lab.ClientIP4, port) }

	// Unsolicited: the victim's socket asked nothing.
	p := startPeer(t, d.victim, d.bin, "listen")
	port := p.ready()
	d.forge(t, lab.ClientIP4+":53", client(port), 7, "unsolicited.lab", "unsolicited.evil")
	p.expect("got " + lab.ClientIP4 + ":53 7")
	p.close()

	// The right id and question, from another server than the one asked.
	p = startPeer(t, d.victim, d.bin, "ask", "-server", lab.ServerIP4+":53", "-name", "slow.lab", "-id", "4369")
	port = p.ready()
	d.forge(t, lab.ClientIP4+":53", client(port), 4369, "slow.lab", "otherserver.evil")
	p.expect("got " + lab.ClientIP4 + ":53 4369")
	p.close()

	// From the server asked (a local resolver address where nothing
	// listens, so the attacker can bind it): a wrong id, then the right id
	// for another question.
	p = startPeer(t, d.victim, d.bin, "ask", "-server", "127.0.0.53:53", "-name", "slow.lab", "-id", "8738")
	port = p.ready()
	loop := fmt.Sprintf("127.0.0.1:%d", port)
	d.forge(t, "127.0.0.53:53", loop, 8739, "slow.lab", "wrongid.evil")
	p.expect("got 127.0.0.53:53 8739")
	d.forge(t, "127.0.0.53:53", loop, 8738, "otherquestion.evil", "")
	p.expect("got 127.0.0.53:53 8738")
	p.close()

	// A real answer, then a replay of it with one more name.
	p = startPeer(t, d.victim, d.bin, "ask", "-server", lab.ServerIP4+":53", "-name", "real.lab", "-id", "13107")
	port = p.ready()
	p.expect("got " + lab.ServerIP4 + ":53 13107")
	if _, err := srv.Conn.WriteTo(forged(t, 13107, "real.lab", "replay.evil"), &net.UDPAddr{IP: net.ParseIP(lab.ClientIP4), Port: port}); err != nil {
		t.Fatal(err)
	}
	p.expect("got " + lab.ServerIP4 + ":53 13107")
	p.close()

	names, sum := d.victimNames(t, r)
	if !slices.Equal(names, []string{"real.lab"}) {
		t.Errorf("the victim's flow has names %v, want only real.lab", names)
	}
	want := DNSMatchStats{Queries: 3, Matched: 1, NoQuery: 3, OtherServer: 1, Mismatch: 1}
	if sum.Probe.DNS != want {
		t.Errorf("dns stats %+v, want %+v", sum.Probe.DNS, want)
	}
	if sum.Status.DNSIgnored != 5 || sum.Run.DNS != want {
		t.Errorf("status ignored %d, run %+v", sum.Status.DNSIgnored, sum.Run.DNS)
	}
}

// TestDNSQueryFloodKeepsOthersQueries: while the victim waits for an
// answer, another user floods the query table. The flood only pushes out
// the flooder's own queries (over its share), and the victim's answer
// still gives its names.
func TestDNSQueryFloodKeepsOthersQueries(t *testing.T) {
	d := newDNSLab(t)
	release := make(chan struct{})
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"delayed.lab": release}))
	opts := DefaultProbeOptions()
	opts.DNSQueries, opts.DNSQueryShare = 64, 8
	r := startRun(t, d.config(opts))

	p := startPeer(t, d.victim, d.bin, "ask", "-server", lab.ServerIP4+":53", "-name", "delayed.lab", "-id", "100")
	p.ready()
	flood := startPeer(t, d.attacker, d.bin, "ask", "-server", lab.ServerIP4+":53", "-name", "flood.lab", "-id", "1000", "-count", "500")
	flood.expect("sent 500")
	flood.close()
	close(release)
	p.expect("got " + lab.ServerIP4 + ":53 100")
	p.close()

	names, sum := d.victimNames(t, r)
	if !slices.Equal(names, []string{"delayed.lab"}) {
		t.Errorf("the victim's flow has names %v, want delayed.lab", names)
	}
	want := DNSMatchStats{Queries: 501, QueriesEvicted: 500 - 8, Matched: 1}
	if sum.Probe.DNS != want {
		t.Errorf("dns stats %+v, want %+v", sum.Probe.DNS, want)
	}
}

// TestDNATResolverStillNamesFlows: a resolver address rewritten by a DNAT
// in the output path (as Docker's 127.0.0.11 is): the query leaves for
// another port than 53, its answer comes back from the address asked.
// Connected (dig) and unconnected (dnspeer) sockets still get their names.
func TestDNATResolverStillNamesFlows(t *testing.T) {
	lab.Require(t, "dig", "nft")
	d := newDNSLab(t)
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":5353", answerNames(map[string]chan struct{}{"nat.lab": nil, "nat2.lab": nil}))
	lab.MustRun(t, "ip", "netns", "exec", d.pair.Client.Name, "nft", "add table ip egtnat; "+
		"add chain ip egtnat out { type nat hook output priority -100; policy accept; }; "+
		"add rule ip egtnat out ip daddr 10.77.0.53 udp dport 53 dnat to "+lab.ServerIP4+":5353")
	r := startRun(t, d.config(DefaultProbeOptions()))

	if out := d.victim.MustRun(t, "dig", "+short", "+tries=1", "@10.77.0.53", "nat.lab"); !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig through the DNAT: %q", out)
	}
	p := startPeer(t, d.victim, d.bin, "ask", "-server", "10.77.0.53:53", "-name", "nat2.lab", "-id", "77")
	p.ready()
	p.expect("got 10.77.0.53:53 77")
	p.close()

	names, sum := d.victimNames(t, r)
	for _, n := range []string{"nat.lab", "nat2.lab"} {
		if !slices.Contains(names, n) {
			t.Errorf("the victim's flow has names %v, lacks %s", names, n)
		}
	}
	if s := sum.Probe.DNS; s.Matched != 2 || s.Ignored() != 0 {
		t.Errorf("dns stats %+v, want 2 answers used, none ignored", s)
	}
}

// TestAnswerBehindIPv6ExtensionHeader: a resolver whose IPv6 answers carry
// a destination options header still names the victim's flow. The
// learner finds the UDP header past IPv6 extension headers (common.h
// l4_hdr), as the DNS policy and the name check do; before, it stopped at
// the first header and took such an answer for no UDP at all.
func TestAnswerBehindIPv6ExtensionHeader(t *testing.T) {
	lab.Require(t, "dig")
	d := newDNSLab(t)
	srv := lab.ServeDNS(t, d.pair.Server, net.JoinHostPort(lab.ServerIP6, "53"), answerNames(map[string]chan struct{}{"ext.lab": nil}))
	rc, err := srv.Conn.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		opt := []byte{0, 0, 1, 4, 0, 0, 0, 0} // next header (the kernel's), length 0, PadN of 4
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(opt))
	}); err != nil || serr != nil {
		t.Fatalf("set IPV6_DSTOPTS on the server's socket: %v", errors.Join(err, serr))
	}
	r := startRun(t, d.config(DefaultProbeOptions()))

	if out := d.victim.MustRun(t, "dig", "+short", "+tries=1", "@"+lab.ServerIP6, "ext.lab"); !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig over IPv6: %q", out)
	}
	d.victimNamedOnly(t, r, 1, "ext.lab")
}
