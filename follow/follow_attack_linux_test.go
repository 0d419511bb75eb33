//go:build linux

package follow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
)

// The attacks of issue 9 on the follow mark and on DNS answers, each
// tried by a real client against a table applied in a namespace.

// udpSink records the datagrams a namespace receives on some ports, in
// the order each port's socket got them.
type udpSink struct {
	mu  sync.Mutex
	got map[int][]string
}

func newUDPSink(t *testing.T, ns *lab.Netns, ports ...int) *udpSink {
	t.Helper()
	s := &udpSink{got: map[int][]string{}}
	for _, port := range ports {
		lab.ServeUDP(t, ns, "udp4", fmt.Sprintf("0.0.0.0:%d", port), func(b []byte) {
			s.mu.Lock()
			s.got[port] = append(s.got[port], string(b))
			s.mu.Unlock()
		})
	}
	return s
}

func (s *udpSink) has(port int, msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.got[port] {
		if m == msg {
			return true
		}
	}
	return false
}

// Sentinel is where each attack client sends an allowed datagram after
// its forged one: both go to the same socket on the same path, so when
// the sentinel is there, the forged datagram had its chance.
const sentinelAddr = lab.ServerIP4 + ":9001"

// reached waits for the client's sentinel and says whether the forged
// datagram tagged tag reached port 9001 first.
func (l *followLab) reached(t *testing.T, tag string) bool {
	t.Helper()
	lab.WaitFor(t, func() bool { return l.sink.has(9001, "sentinel "+tag) })
	return l.sink.has(9001, tag)
}

// markClient runs the test binary as a client (markClientHelper) with
// the given steps; it returns the client's result.
func markClient(t *testing.T, a lab.As, steps ...string) markResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"env", "EGRESS_HELPER=mark-client", "EGRESS_STEPS=" + strings.Join(steps, ";"),
		helperBinary(t), "-test.run=^TestFollowHelper$"}
	out, err := a.Command(ctx, args...).CombinedOutput()
	var r markResult
	if err := json.Unmarshal(jsonLine(out), &r); err != nil {
		t.Fatalf("mark client %v said %q: %v", steps, out, err)
	}
	if err != nil && r.Err == "" {
		t.Fatalf("mark client %v: %v\n%s", steps, err, out)
	}
	return r
}

var helperOnce struct {
	sync.Mutex
	path string
}

// helperBinary is a copy of the test binary that any user may run, made
// once per test binary run.
func helperBinary(t *testing.T) string {
	helperOnce.Lock()
	defer helperOnce.Unlock()
	if helperOnce.path != "" {
		if _, err := os.Stat(helperOnce.path); err == nil {
			return helperOnce.path
		}
	}
	helperOnce.path = publicCopy(t, os.Args[0])
	return helperOnce.path
}

type markResult struct {
	// Connected lists, per tcp step, whether the connect succeeded.
	Connected []bool `json:"connected"`
	Err       string `json:"err,omitempty"`
}

// TestFollowHelper is the client the attack tests run in the client
// namespace; it does nothing without EGRESS_HELPER.
func TestFollowHelper(t *testing.T) {
	switch os.Getenv("EGRESS_HELPER") {
	case "mark-client":
		markClientHelper()
	case "userns-dns":
		usernsDNSHelper()
	case "udp-hold":
		udpHoldHelper()
	}
}

// markClientHelper runs the steps of EGRESS_STEPS, each "verb args...":
//
//	tcp-mark ADDR              a TCP socket with the follow bit set by itself connects to ADDR
//	udp-mark ADDR TAG          an unconnected UDP socket with the bit sends TAG to ADDR
//	udp-connect-mark ADDR TAG  a UDP socket connects to ADDR, then sets the bit, then sends TAG
//	udp-follow NAME PORT ADDR TAG  resolves NAME, connects a UDP socket to it on PORT, sends
//	                           "TAG ok" there, then TAG to ADDR through the same socket,
//	                           then "TAG after" to the followed address
//	dns-flood N                sends N queries for flood.lab (never answered) to the resolver
//
// After each udp step it sends "sentinel TAG" to the sentinel address from
// a plain socket.
func markClientHelper() {
	var r markResult
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(r) }()
	for _, step := range strings.Split(os.Getenv("EGRESS_STEPS"), ";") {
		f := strings.Fields(step)
		if len(f) == 0 {
			continue
		}
		var err error
		switch f[0] {
		case "tcp-mark":
			var ok bool
			ok, err = tcpMarked(f[1])
			r.Connected = append(r.Connected, ok)
		case "udp-mark":
			err = udpSend(f[1], f[2], true, false)
		case "udp-connect-mark":
			err = udpSend(f[1], f[2], false, true)
		case "udp-follow":
			err = udpFollow(f[1], f[2], f[3], f[4])
		case "dns-flood":
			err = dnsFlood(f[1])
		default:
			err = fmt.Errorf("unknown step %q", f[0])
		}
		if err == nil && strings.HasPrefix(f[0], "udp") {
			err = udpSend(sentinelAddr, "sentinel "+f[len(f)-1], false, false)
		}
		if err != nil {
			r.Err = fmt.Sprintf("%s: %v", step, err)
			return
		}
	}
}

const followBit = plan.DefaultFollowMark

func sockaddr(addr string) (unix.Sockaddr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}, nil
}

// tcpMarked connects to addr from a socket whose mark has the follow bit;
// false when the connect does not complete within 2 s.
func tcpMarked(addr string) (bool, error) {
	sa, err := sockaddr(addr)
	if err != nil {
		return false, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, followBit); err != nil {
		return false, fmt.Errorf("set SO_MARK (CAP_NET_RAW): %w", err)
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return false, nil
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 2000); err != nil || n == 0 {
		return false, nil
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	return err == nil && soerr == 0, nil
}

// udpSend sends msg to addr from a new UDP socket: with the follow bit
// set before (mark), or connected first and the bit set after the
// connect (connectMark), or plain.
func udpSend(addr, msg string, mark, connectMark bool) error {
	fd, sa, err := udpSocket(addr)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	setMark := func() error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, followBit); err != nil {
			return fmt.Errorf("set SO_MARK (CAP_NET_RAW): %w", err)
		}
		return nil
	}
	if mark {
		if err := setMark(); err != nil {
			return err
		}
	}
	if connectMark {
		if err := unix.Connect(fd, sa); err != nil {
			return err
		}
		if err := setMark(); err != nil {
			return err
		}
		_, err := unix.Write(fd, []byte(msg))
		return ignoreEPERM(err)
	}
	return ignoreEPERM(unix.Sendto(fd, []byte(msg), 0, sa))
}

// udpSocket opens an IPv4 UDP socket for sending to addr; close fd.
func udpSocket(addr string) (fd int, sa unix.Sockaddr, err error) {
	if sa, err = sockaddr(addr); err != nil {
		return -1, nil, err
	}
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	return fd, sa, err
}

// ignoreEPERM: a datagram the table drops fails the send with EPERM;
// whether it arrived is what the tests look at.
func ignoreEPERM(err error) error {
	if err == unix.EPERM {
		return nil
	}
	return err
}

// udpFollow resolves name, connects a UDP socket to its address on port
// (the follower marks it), sends "TAG ok" there and then TAG to other.
func udpFollow(name, port, other, tag string) error {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, lab.ServerIP4+":53")
	if err != nil || len(r.Answer) == 0 {
		return fmt.Errorf("resolve %s: %v", name, err)
	}
	ip := r.Answer[0].(*dns.A).A.String()
	osa, err := sockaddr(other)
	if err != nil {
		return err
	}
	fd, sa, err := udpSocket(net.JoinHostPort(ip, port))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return err
	}
	if _, err := unix.Write(fd, []byte(tag+" ok")); err != nil {
		return fmt.Errorf("send to the followed address: %w", err)
	}
	if err := ignoreEPERM(unix.Sendto(fd, []byte(tag), 0, osa)); err != nil {
		return err
	}
	// Behind it on the same path: when the server's PORT socket has this,
	// a datagram the forged one sent to the same port there had its chance.
	if _, err := unix.Write(fd, []byte(tag+" after")); err != nil {
		return fmt.Errorf("send to the followed address again: %w", err)
	}
	return nil
}

// forger is uid 4242 holding CAP_NET_RAW, in the follower's cgroup.
func (l *followLab) forger() lab.As {
	a := l.other
	a.Caps = []string{"net_raw"}
	return a
}

// forgedMark has a sets the follow bit itself on a TCP socket that
// connects to 10.77.0.1:9090 and on a UDP socket that sends tag to
// 10.77.1.230:9001, neither of which the table allows; it fails the test
// for each that gets through.
func (l *followLab) forgedMark(t *testing.T, a lab.As, tag, when string) {
	t.Helper()
	r := markClient(t, a, "tcp-mark "+lab.ServerIP4+":9090", "udp-mark 10.77.1.230:9001 "+tag)
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	if r.Connected[0] {
		t.Errorf("a forged mark connected to 10.77.0.1:9090 %s", when)
	}
	if l.reached(t, tag) {
		t.Errorf("a forged mark sent a datagram to 10.77.1.230:9001 %s", when)
	}
}

// TestForgedMarkWithoutFollower (attack 1): with the table applied and no
// follower running, a process with CAP_NET_RAW that sets the follow bit
// itself reaches nothing the table does not allow.
func TestForgedMarkWithoutFollower(t *testing.T) {
	l := newFollowLabWith(t, followLabOpts{floor: time.Minute, maxPerName: 8, noFollower: true})
	l.forgedMark(t, l.forger(), "nofollower", "with no follower running")
}

// TestForgedMarkWithFollower (attacks 1 and 2): with the follower running,
// a mark set by the process itself (before a TCP connect, on an
// unconnected UDP socket, after a UDP connect), and a mark the follower
// set for another destination, reach nothing the table does not allow;
// the followed destination itself still works.
func TestForgedMarkWithFollower(t *testing.T) {
	l := newFollowLab(t, time.Minute, 8)
	r := markClient(t, l.forger(), "tcp-mark "+lab.ServerIP4+":9090", "udp-mark 10.77.1.230:9001 unconnected",
		"udp-connect-mark 10.77.1.231:9001 after-connect")
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	if r.Connected[0] {
		t.Error("a forged mark connected to 10.77.0.1:9090")
	}
	if l.reached(t, "unconnected") {
		t.Error("an unconnected UDP socket with a forged mark reached 10.77.1.230:9001")
	}
	if l.reached(t, "after-connect") {
		t.Error("a UDP socket that set the mark after its connect reached 10.77.1.231:9001")
	}
	r = markClient(t, l.nobody, "udp-follow udp.lab 9000 10.77.1.232:9001 other-dest")
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	lab.WaitFor(t, func() bool { return l.sink.has(9000, "other-dest ok") })
	if l.reached(t, "other-dest") {
		t.Error("a UDP socket marked for a followed destination sent to another address")
	}
	// The same port at another address: only the address differs from
	// what the mark was given for.
	r = markClient(t, l.nobody, "udp-follow udp.lab 9000 10.77.1.232:9000 same-port")
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	lab.WaitFor(t, func() bool { return l.sink.has(9000, "same-port after") })
	if l.sink.has(9000, "same-port") {
		t.Error("a UDP socket marked for a followed destination sent to another address on the same port")
	}
	if s := l.f.Stats(); s.MarkDropped < 4 || s.Marked == 0 {
		t.Errorf("the mark check counted %d drops (want at least 4), %d connects marked", s.MarkDropped, s.Marked)
	}
}

// TestForgedMarkOutsideFollowerCgroup (attack 1): a process outside the
// cgroup the follower watches, with CAP_NET_RAW and a forged mark,
// reaches nothing the table does not allow while the follower runs.
func TestForgedMarkOutsideFollowerCgroup(t *testing.T) {
	l := newFollowLab(t, time.Minute, 8)
	outside := l.forger()
	outside.Cgroup = lab.NewCgroup(t)
	l.forgedMark(t, outside, "outside", "from outside the follower's cgroup")
}

// TestAnswerInOwnNamespace (attack 3): uid 4242 makes a user and network
// namespace of its own (unshare, unprivileged), puts the resolver's
// address on its loopback and answers its own query for own.lab (a name
// it, and root, have a rule for) with 10.77.1.233 and 10.77.1.234. Neither
// address opens in the enforced namespace: not for 4242 (its uid mapped to
// itself), not for root (its uid mapped to root).
func TestAnswerInOwnNamespace(t *testing.T) {
	lab.Require(t, "unshare", "ip")
	l := newFollowLab(t, time.Minute, 8)
	bin := helperBinary(t)
	for _, c := range []struct {
		name    string
		unshare []string
		ip      string
		victim  lab.As
	}{
		{"uid mapped to itself", []string{"--map-current-user", "--keep-caps"}, "10.77.1.233", l.other},
		{"uid mapped to root", []string{"--map-root-user"}, "10.77.1.234", lab.As{UID: 0, GID: 0, Netns: l.pair.Client, Cgroup: l.cg}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"env", "EGRESS_HELPER=userns-dns", "EGRESS_ANSWER=" + c.ip, "unshare", "--net"}, c.unshare...)
			args = append(args, bin, "-test.run=^TestFollowHelper$")
			out, err := l.other.Run(args...)
			if err != nil || !strings.Contains(out, "answered "+c.ip) {
				t.Fatalf("the forged answer in the user's own namespace: %v\n%s", err, out)
			}
			if _, err := c.victim.Run("curl", "-sS", "--max-time", "2", "http://"+c.ip+":8080/"); err == nil {
				t.Errorf("uid %d reached %s, the address of an answer forged in another namespace", c.victim.UID, c.ip)
			}
			key := fmt.Sprintf("%d . %s . tcp . 8080", c.victim.UID, c.ip)
			if l.setElements(t)[key] {
				t.Errorf("the follower put %s in set follow4 from an answer forged in another namespace", key)
			}
			if s := l.f.Stats(); s.OtherNetns == 0 || s.Accepted != 0 {
				t.Errorf("answers from another namespace: %d counted, %d used", s.OtherNetns, s.Accepted)
			}
		})
	}
}

// usernsDNSHelper runs inside the user and network namespace unshare made:
// it puts the resolver's address on loopback, answers A queries for
// own.lab with EGRESS_ANSWER from port 53 of that address, and asks.
func usernsDNSHelper() {
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", lab.ServerIP4 + "/32", "dev", "lo"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fail(fmt.Errorf("ip %v: %v: %s", args, err, out))
		}
	}
	pc, err := net.ListenPacket("udp4", lab.ServerIP4+":53")
	if err != nil {
		fail(err)
	}
	answer := os.Getenv("EGRESS_ANSWER")
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, lab.A(r.Question[0].Name, answer, 3600))
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	m := new(dns.Msg)
	m.SetQuestion("own.lab.", dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, lab.ServerIP4+":53")
	if err != nil || len(r.Answer) == 0 {
		fail(fmt.Errorf("ask own.lab: %v", err))
	}
	fmt.Println("answered", r.Answer[0].(*dns.A).A, "uid", strconv.Itoa(os.Getuid()))
}

// TestAnswerRecordsOfOtherOwners: an answer's address records count only
// when their owner is the question or a name its CNAME chain leads to.
func TestAnswerRecordsOfOtherOwners(t *testing.T) {
	l := newFollowLab(t, time.Minute, 8)
	for _, name := range []string{"owner.rot.lab", "chain.rot.lab"} {
		if _, err := l.nobody.Run("dig", "+tries=1", "+time=2", "@"+lab.ServerIP4, name); err != nil {
			t.Fatal(err)
		}
	}
	// A chain that holds still works (the sentinel of this test).
	if err := l.curl(l.nobody, "http://www.rot.lab:8080/"); err != nil {
		t.Fatalf("a CNAME chain: %v", err)
	}
	for _, ip := range []string{"10.77.1.235", "10.77.1.236"} {
		if err := l.curl(l.nobody, "http://"+ip+":8080/"); err == nil {
			t.Errorf("nobody reached %s, an address record whose owner is not the question's chain", ip)
		}
		if key := "65534 . " + ip + " . tcp . 8080"; l.setElements(t)[key] {
			t.Errorf("%s is in set follow4", key)
		}
	}
	if s := l.f.Stats(); s.OwnerMismatch < 2 {
		t.Errorf("%d address records of other owners counted, want 2", s.OwnerMismatch)
	}
}

// TestFollowTTLCapped: a followed address stays at most follow_ttl_max
// (default 1h), whatever TTL the answer gives.
func TestFollowTTLCapped(t *testing.T) {
	l := newFollowLab(t, time.Minute, 8)
	if err := l.curl(l.nobody, "http://ttl.rot.lab:8080/"); err != nil {
		t.Fatal(err)
	}
	var e Address
	lab.WaitFor(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, a := range l.added {
			if a.IP.String() == "10.77.1.237" {
				e = a
				return true
			}
		}
		return false
	})
	if e.Timeout > time.Hour {
		t.Errorf("a 30-day TTL is followed for %s, more than follow_ttl_max (1h)", e.Timeout)
	}
	if s := l.f.Stats(); s.TTLCapped == 0 {
		t.Error("no TTL counted as capped")
	}
}

// TestQueryFloodOfOneUser: uid 4242 floods the kernel's query table with
// queries that are never answered while nobody waits for an answer;
// nobody's answer is still used.
func TestQueryFloodOfOneUser(t *testing.T) {
	l := newFollowLab(t, time.Minute, 8)
	done := make(chan error, 1)
	go func() {
		_, err := l.nobody.Run("dig", "+tries=1", "+time=15", "@"+lab.ServerIP4, "slow.rot.lab")
		done <- err
	}()
	<-l.slowAsked // nobody's query is in the kernel's table
	r := markClient(t, l.other, "dns-flood 20000")
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	close(l.slowRelease)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, func() bool { return l.f.Stats().Accepted+l.f.Stats().NoQuery > 0 })
	if err := l.curl(l.nobody, "http://10.77.1.238:8080/"); err != nil {
		t.Errorf("nobody's answer was lost to uid 4242's flood of queries: %v (stats %+v)", err, l.f.Stats())
	}
	// uid 4242 filled its own share only, and the kernel counted the rest.
	if s := l.f.Stats(); s.OverShare < 20000-1024 || s.Queries > 1024+10 {
		t.Errorf("of 20000 flooding queries, %d remembered and %d counted over the share (1024)", s.Queries, s.OverShare)
	}
}

// dnsFlood sends n queries with distinct ids from one socket.
func dnsFlood(n string) error {
	count, err := strconv.Atoi(n)
	if err != nil {
		return err
	}
	c, err := net.Dial("udp4", lab.ServerIP4+":53")
	if err != nil {
		return err
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("flood.lab.", dns.TypeA)
	for i := 0; i < count; i++ {
		m.Id = uint16(i)
		wire, err := m.Pack()
		if err != nil {
			return err
		}
		if _, err := c.Write(wire); err != nil {
			return err
		}
	}
	return nil
}

// udpHoldHelper resolves the name of EGRESS_STEPS ("NAME PORT TAG"),
// connects a UDP socket to it (the follower marks it), sends "TAG 1",
// says "ready", and sends "TAG 2" from the same socket when a line comes
// on its standard input.
func udpHoldHelper() {
	f := strings.Fields(os.Getenv("EGRESS_STEPS"))
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(f[0]), dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, lab.ServerIP4+":53")
	if err != nil || len(r.Answer) == 0 {
		fail(fmt.Errorf("resolve %s: %v", f[0], err))
	}
	c, err := net.Dial("udp4", net.JoinHostPort(r.Answer[0].(*dns.A).A.String(), f[1]))
	if err != nil {
		fail(err)
	}
	if _, err := c.Write([]byte(f[2] + " 1")); err != nil {
		fail(err)
	}
	fmt.Println("ready")
	if _, err := fmt.Scanln(); err != nil {
		fail(err)
	}
	if _, err := c.Write([]byte(f[2] + " 2")); err != nil && !errors.Is(err, unix.EPERM) {
		fail(err)
	}
	fmt.Println("sent")
}

// gateElements counts the elements of set follow_gate.
func (l *followLab) gateElements(t *testing.T) int {
	t.Helper()
	st, err := nft.Open(l.target).Status(plan.DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sets {
		if s.Name == plan.SetFollowGate {
			return s.Elements
		}
	}
	t.Fatalf("no set %s in %+v", plan.SetFollowGate, st.Sets)
	return 0
}

// TestFollowerCrashAndRestart: a follower that dies (its programs closed
// without a clean stop) leaves the mark check attached, so a forged mark
// is still dropped, and the table stops accepting the mark when the gate
// element times out. A new follower takes over: a UDP socket marked before
// the crash still reaches its destination. A clean stop closes the gate at
// once and unpins the check.
func TestFollowerCrashAndRestart(t *testing.T) {
	l := newFollowLabWith(t, followLabOpts{floor: time.Minute, maxPerName: 8, gateTimeout: 3 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	holder := l.nobody.Command(ctx, "env", "EGRESS_HELPER=udp-hold", "EGRESS_STEPS=udp.lab 9000 held", helperBinary(t), "-test.run=^TestFollowHelper$")
	in, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &lab.Buffer{}
	holder.Stdout, holder.Stderr = out, out
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = holder.Wait() }()
	lab.WaitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	if !l.sink.has(9000, "held 1") {
		lab.WaitFor(t, func() bool { return l.sink.has(9000, "held 1") })
	}

	pin := filepath.Join(l.f.pinDir, pinCheck)
	l.stop(false) // the follower dies
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("the mark check is not pinned after the follower died: %v", err)
	}
	if n := l.gateElements(t); n != 1 {
		t.Fatalf("set %s holds %d elements right after the crash, want the dead follower's", plan.SetFollowGate, n)
	}
	l.forgedMark(t, l.forger(), "crashed", "while the follower was dead (the gate still open)")
	lab.WaitFor(t, func() bool { return l.gateElements(t) == 0 })

	l.startFollower(t)
	if n := l.gateElements(t); n != 1 {
		t.Errorf("set %s holds %d elements with a new follower running, want 1", plan.SetFollowGate, n)
	}
	before := l.f.Stats().MarkDropped
	fmt.Fprintln(in)
	lab.WaitFor(t, func() bool { return l.sink.has(9000, "held 2") || l.f.Stats().MarkDropped > before })
	if !l.sink.has(9000, "held 2") {
		t.Errorf("the socket marked before the restart lost its destination: %s", out.String())
	}

	l.stop(true)
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mark check is still pinned after a clean stop: %v", err)
	}
	if n := l.gateElements(t); n != 0 {
		t.Errorf("set %s holds %d elements after a clean stop", plan.SetFollowGate, n)
	}
}
