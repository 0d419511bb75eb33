// Command udpsend sends UDP datagrams for the learner's kernel tests, run
// as a chosen user inside the test cgroup:
//
//	udpsend SPEC...
//
// where SPEC is MODE,NET,ADDR:PORT,COUNT: MODE sendto sends COUNT
// datagrams with sendto() from one unconnected socket per NET (udp4: an
// AF_INET socket; udp: a dual-stack AF_INET6 socket, which sends to an
// IPv4 address as ::ffff:a.b.c.d), shared by every sendto SPEC of that
// NET; MODE connect makes a new connected socket and sends COUNT
// datagrams with send(); MODE sockets makes COUNT unconnected sockets one
// after the other, each sending two datagrams with sendto(). It prints "sent N" (every datagram sent) and
// exits 0, or the first error and exits 1.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

func main() {
	sent, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpsend:", err)
		os.Exit(1)
	}
	fmt.Println("sent", sent)
}

func run(specs []string) (int, error) {
	unconnected := map[string]*net.UDPConn{}
	payload := []byte("learner test datagram")
	sent := 0
	for _, s := range specs {
		f := strings.Split(s, ",")
		if len(f) != 4 {
			return sent, fmt.Errorf("spec %q: want MODE,NET,ADDR:PORT,COUNT", s)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			return sent, fmt.Errorf("spec %q: %w", s, err)
		}
		dst, err := net.ResolveUDPAddr(f[1], f[2])
		if err != nil {
			return sent, fmt.Errorf("spec %q: %w", s, err)
		}
		switch f[0] {
		case "sendto":
			c := unconnected[f[1]]
			if c == nil {
				if c, err = net.ListenUDP(f[1], nil); err != nil {
					return sent, err
				}
				unconnected[f[1]] = c
			}
			for range n {
				if _, err := c.WriteToUDP(payload, dst); err != nil {
					return sent, fmt.Errorf("sendto %s: %w", dst, err)
				}
				sent++
			}
		case "connect":
			c, err := net.DialUDP(f[1], nil, dst)
			if err != nil {
				return sent, err
			}
			for range n {
				if _, err := c.Write(payload); err != nil {
					return sent, fmt.Errorf("send %s: %w", dst, err)
				}
				sent++
			}
			c.Close()
		case "sockets":
			for range n {
				c, err := net.ListenUDP(f[1], nil)
				if err != nil {
					return sent, err
				}
				for range 2 {
					if _, err := c.WriteToUDP(payload, dst); err != nil {
						return sent, fmt.Errorf("sendto %s: %w", dst, err)
					}
					sent++
				}
				c.Close()
			}
		default:
			return sent, fmt.Errorf("spec %q: unknown mode %q", s, f[0])
		}
	}
	return sent, nil
}
