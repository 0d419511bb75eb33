// Command floorsend is the client of BenchmarkHookFloor, run inside the
// benchmark's cgroup:
//
//	floorsend UDPADDR TCPADDR
//
// It reads commands "KIND N" on stdin and, for each, does N operations on
// one locked thread, then prints the thread's CPU time for them in
// nanoseconds: KIND udp sends N 64-byte datagrams with write() on a
// socket connected to UDPADDR; sendto sends them with sendto() on an
// unconnected socket; connect makes N TCP connections to TCPADDR
// (socket, connect, close with SO_LINGER 0). Any error ends it with
// status 1.
package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floorsend:", err)
		os.Exit(1)
	}
}

func sockaddr(s string) (*unix.SockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("address %q: want an IPv4 ADDR:PORT", s)
	}
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}, nil
}

func threadNs() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return ts.Nano()
}

func run() error {
	if len(os.Args) != 3 {
		return fmt.Errorf("usage: floorsend UDPADDR TCPADDR")
	}
	udp, err := sockaddr(os.Args[1])
	if err != nil {
		return err
	}
	tcp, err := sockaddr(os.Args[2])
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	conn, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(conn, udp); err != nil {
		return err
	}
	unconn, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	payload := make([]byte, 64)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		kind, count, _ := strings.Cut(in.Text(), " ")
		n, err := strconv.Atoi(count)
		if err != nil {
			return fmt.Errorf("command %q: %w", in.Text(), err)
		}
		start := threadNs()
		switch kind {
		case "udp":
			for range n {
				if _, err := unix.Write(conn, payload); err != nil && err != unix.ECONNREFUSED {
					return err
				}
			}
		case "sendto":
			for range n {
				if err := unix.Sendto(unconn, payload, 0, udp); err != nil {
					return err
				}
			}
		case "connect":
			for range n {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				if err := unix.Connect(fd, tcp); err != nil {
					unix.Close(fd)
					return err
				}
				_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				unix.Close(fd)
			}
		default:
			return fmt.Errorf("command %q: unknown kind", in.Text())
		}
		fmt.Println(threadNs() - start)
	}
	return in.Err()
}
