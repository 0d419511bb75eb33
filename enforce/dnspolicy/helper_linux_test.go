//go:build linux

package dnspolicy

import (
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The tests run real clients (dig) and, for queries no client would send,
// this test binary itself as a client: re-run with DP_HELPER set, inside
// the test's cgroup and namespace, as the test's user.

// helperBin is a copy of the test binary every user may run.
var helperBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv("DP_HELPER"); mode != "" {
		os.Exit(helperMain(mode))
	}
	code := func() int {
		dir, err := os.MkdirTemp("", "dnspolicy-helper")
		if err == nil {
			defer os.RemoveAll(dir)
			helperBin = filepath.Join(dir, "helper")
			err = copyExe(os.Args[0], helperBin)
		}
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "dnspolicy tests: copy the helper:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func copyExe(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// helperMain: DP_HELPER=udp|tcp sends DP_MSG (hex; for tcp the bytes as
// written, length prefixes included) to DP_SERVER until an answer comes
// (UDP: again every 300 ms), prints "answered" and exits 0.
// DP_HELPER=burst sends DP_N queries of distinct base32 labels under
// DP_PARENT, without waiting. DP_HELPER=flood sends DP_MSG DP_N times and
// prints the rate.
func helperMain(mode string) int {
	server := os.Getenv("DP_SERVER")
	msg, _ := hex.DecodeString(os.Getenv("DP_MSG"))
	n, _ := strconv.Atoi(os.Getenv("DP_N"))
	var err error
	switch mode {
	case "udp":
		err = helperUDP(server, msg)
	case "tcp":
		err = helperTCP(server, msg)
	case "burst":
		err = helperBurst(server, os.Getenv("DP_PARENT"), n)
	case "flood":
		err = helperFlood(server, msg, n)
	case "latency":
		err = helperLatency(server, msg, n)
	case "blocks":
		err = helperBlocks(server, msg, n)
	case "latblocks":
		err = helperLatencyBlocks(server, msg, n)
	case "stream":
		err = helperStream(server, msg)
	case "follower":
		err = helperFollower()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func helperUDP(server string, msg []byte) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	if os.Getenv("DP_EXTHDR") != "" {
		if err := extensionHeader(c.(*net.UDPConn), c.RemoteAddr().(*net.UDPAddr).IP); err != nil {
			return err
		}
	}
	buf := make([]byte, 4096)
	for {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if k, err := c.Read(buf); err == nil {
			fmt.Printf("answered %d bytes\n", k)
			return nil
		}
	}
}

func helperTCP(server string, raw []byte) error {
	c, err := net.Dial("tcp", server)
	if err != nil {
		return err
	}
	if _, err := c.Write(raw); err != nil {
		return err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return err
	}
	fmt.Printf("answered %d bytes\n", binary.BigEndian.Uint16(l[:]))
	return nil
}

func helperBurst(server, parent string, n int) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	for i := range n {
		label := strings.ToLower(enc.EncodeToString(fmt.Appendf(nil, "secret chunk %06d of the file", i)))
		if len(label) > 63 {
			label = label[:63]
		}
		_, _ = c.Write(query(label + "." + parent)) // a stopped query is EPERM: go on, as a tunnel would
	}
	return nil
}

func helperFlood(server string, msg []byte, n int) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	// The sending thread's CPU time (the egress program runs in its
	// send): a figure that other load on the machine disturbs less than
	// the rate.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	floodOnce(c, msg, n)
	return nil
}

// floodOnce sends msg n times on c and prints the rate and the calling
// thread's CPU microseconds a query (the caller locks its OS thread).
func floodOnce(c net.Conn, msg []byte, n int) {
	var r0, r1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &r0)
	start := time.Now()
	for range n {
		_, _ = c.Write(msg)
	}
	elapsed := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	fmt.Printf("%f %f\n", float64(n)/elapsed.Seconds(), float64(cpu.Nanoseconds())/1e3/float64(n))
}

// query packs an A query for name, as dig sends it (with EDNS).
func query(name string) []byte {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.SetEdns0(1232, false)
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// tcpFrame prefixes each message with its length, as DNS over TCP does.
func tcpFrame(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
		out = append(out, m...)
	}
	return out
}

// helperLatency asks n times, one query after the other, and prints each
// round trip in microseconds.
func helperLatency(server string, msg []byte, n int) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for i := range n {
		d, err := roundTrip(c, msg, buf, uint16(i))
		if err != nil {
			return err
		}
		fmt.Println(d.Microseconds())
	}
	return nil
}

// roundTrip sends msg as query id and waits for one answer (5 s at most);
// it returns the time between the two.
func roundTrip(c net.Conn, msg, buf []byte, id uint16) (time.Duration, error) {
	binary.BigEndian.PutUint16(msg, id)
	start := time.Now()
	if _, err := c.Write(msg); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// extensionHeader makes the socket send with an IPv6 destination options
// header (CAP_NET_RAW, as a container may hold), so the UDP header is not
// the IPv6 header's next header. (A routing header needs no privilege
// but this kernel refuses both types without CONFIG_IPV6_MIP6.)
func extensionHeader(c *net.UDPConn, _ net.IP) error {
	rh := []byte{0, 0, 1, 4, 0, 0, 0, 0} // next header (filled by the kernel), length 0, PadN of 4
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(rh))
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IPV6_DSTOPTS: %w", serr)
	}
	return nil
}
