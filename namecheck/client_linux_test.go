//go:build linux

package namecheck_test

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the lab's client: run as another user, in
// the test cgroup and the client namespace, with NC_CLIENT set
// (TestMain). Modes:
//
//	tls NAME ADDR        a TLS handshake presenting NAME, then a GET
//	tls-split NAME ADDR  the same, the ClientHello cut in the name over two
//	                     segments (the second sent once the first is acknowledged)
//	tls-drip NAME ADDR   the same, the ClientHello's first 12 bytes one a segment
//	tls-drip7 NAME ADDR  the same, its first 7 bytes one a segment (each acknowledged)
//	http HOST ADDR       a plain GET with Host HOST after a 3000-byte request line
//	http-late HOST ADDR  a plain GET whose first 4080 bytes end with "Host: ", HOST
//	                     and the rest sent once they are acknowledged
//	raw HEX ADDR         the bytes HEX encodes, then whatever comes back
//
// It prints what the server answered and exits 0, or prints the error and
// exits 1.
func runClient(args []string) int {
	if len(args) != 3 {
		fmt.Println("usage: MODE NAME ADDR")
		return 2
	}
	out, err := client(args[0], args[1], args[2])
	fmt.Print(out)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

func client(mode, name, addr string) (string, error) {
	var d net.Dialer
	if strings.HasSuffix(mode, "+dstopts") { // an IPv6 destination options header on every packet (CAP_NET_RAW)
		mode = strings.TrimSuffix(mode, "+dstopts")
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				opt := []byte{0, 0, 1, 4, 0, 0, 0, 0} // next header (the kernel's), length 0, PadN of 4
				serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(opt))
			})
			return errors.Join(err, serr)
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	switch mode {
	case "tls", "tls-split", "tls-drip", "tls-drip7":
		var conn net.Conn = c
		if mode == "tls-split" {
			conn = &splitter{TCPConn: tc, name: []byte(name)}
		}
		if mode == "tls-drip" {
			conn = &splitter{TCPConn: tc, name: []byte(name), drip: 12}
		}
		if mode == "tls-drip7" {
			conn = &splitter{TCPConn: tc, name: []byte(name), drip: 7}
		}
		t := tls.Client(conn, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if _, err := fmt.Fprintf(t, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name); err != nil {
			return "", err
		}
		b, err := io.ReadAll(t)
		return body(b), err
	case "http":
		fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nUser-Agent: nc\r\nHost: %s\r\nConnection: close\r\n\r\n", strings.Repeat("x", 3000), name)
		b, err := io.ReadAll(c)
		return body(b), err
	case "http-late":
		head := "GET /" + strings.Repeat("x", 4058) + " HTTP/1.1\r\nHost: " // 4080 bytes
		if _, err := io.WriteString(c, head); err != nil {
			return "", err
		}
		if err := (&splitter{TCPConn: tc}).acked(); err != nil {
			return "", err
		}
		if _, err := fmt.Fprintf(c, "%s\r\nConnection: close\r\n\r\n", name); err != nil {
			return "", err
		}
		b, err := io.ReadAll(c)
		return body(b), err
	case "raw":
		raw, err := hex.DecodeString(name)
		if err != nil {
			return "", err
		}
		if _, err := c.Write(raw); err != nil {
			return "", err
		}
		b, err := io.ReadAll(c)
		if len(b) == 0 && err == nil {
			err = errors.New("closed without an answer")
		}
		return string(b), err
	}
	return "", fmt.Errorf("mode %q", mode)
}

func body(b []byte) string {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return string(b[i+4:])
	}
	return string(b)
}

// splitter writes its first write (the ClientHello) in two segments, cut
// in the middle of the name; the second goes once the first is
// acknowledged, so that the kernel cannot merge them.
type splitter struct {
	*net.TCPConn
	name []byte
	drip int // first send this many bytes one a segment
	done bool
}

func (s *splitter) Write(p []byte) (int, error) {
	if s.done {
		return s.TCPConn.Write(p)
	}
	s.done = true
	for i := range s.drip {
		if _, err := s.TCPConn.Write(p[i : i+1]); err != nil {
			return 0, err
		}
		if err := s.acked(); err != nil {
			return 0, err
		}
	}
	if s.drip > 0 {
		n, err := s.TCPConn.Write(p[s.drip:])
		return s.drip + n, err
	}
	cut := bytes.Index(p, s.name)
	if cut < 0 {
		return 0, errors.New("splitter: the name is not in the ClientHello")
	}
	cut += len(s.name) / 2
	if _, err := s.TCPConn.Write(p[:cut]); err != nil {
		return 0, err
	}
	if err := s.acked(); err != nil {
		return 0, err
	}
	n, err := s.TCPConn.Write(p[cut:])
	return cut + n, err
}

func (s *splitter) acked() error {
	raw, err := s.SyscallConn()
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		var info *unix.TCPInfo
		_ = raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO) })
		if err != nil {
			return err
		}
		if info.Unacked == 0 {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("splitter: the first segment was never acknowledged")
}
