// Command dnspeer is a DNS client and a DNS forger for the learner's kernel
// tests, run as a chosen user inside the test cgroup. It writes one line
// per event on standard output, so the test waits for signals, not time:
//
//	dnspeer ask -server ADDR -name NAME -id ID [-connect] [-count N] [-hold] [-before ADDR]
//	    sends a query (N queries with ids ID..ID+N-1), prints "ready PORT",
//	    then "got SRC ID" for every datagram it receives, until stdin closes
//	    (with -count > 1 it prints "sent N" and exits). With -hold it makes
//	    its socket (connected with -connect), prints "socket", and waits for
//	    a line on stdin before it sends; with -before it first sends one
//	    datagram to ADDR from the same socket.
//	dnspeer listen
//	    prints "ready PORT", then "got SRC ID" per datagram, until stdin closes.
//	dnspeer forge -from ADDR -to ADDR -id ID -name NAME [-cname NAME] -a IP
//	    sends one DNS answer from ADDR (a port below 1024 needs
//	    net.ipv4.ip_unprivileged_port_start lowered) and prints "sent".
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: dnspeer ask|listen|forge ..."))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	server := fs.String("server", "", "ask: the DNS server ADDR:PORT")
	name := fs.String("name", "", "the question name")
	id := fs.Uint("id", 1, "the DNS id")
	connect := fs.Bool("connect", false, "ask: use a connected socket")
	count := fs.Int("count", 1, "ask: queries to send")
	hold := fs.Bool("hold", false, "ask: make the socket, print \"socket\", wait for a line on stdin, then send")
	before := fs.String("before", "", "ask: first send one datagram to this ADDR:PORT from the same socket")
	from := fs.String("from", "", "forge: source ADDR:PORT")
	to := fs.String("to", "", "forge: destination ADDR:PORT")
	cname := fs.String("cname", "", "forge: answer with NAME CNAME this, then this A")
	a := fs.String("a", "", "forge: the address of the A record")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "ask":
		err = ask(*server, *name, uint16(*id), *connect, *count, askOptions{hold: *hold, before: *before})
	case "listen":
		var c *net.UDPConn
		if c, err = net.ListenUDP("udp", nil); err == nil {
			serve(c)
		}
	case "forge":
		err = forge(*from, *to, *name, *cname, *a, uint16(*id))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "dnspeer:", err)
	os.Exit(1)
}

func query(name string, id uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		fail(err)
	}
	return b
}

// askOptions are ask's ways of preparing its socket.
type askOptions struct {
	hold   bool
	before string
}

// stdin is read line by line by -hold, then to its end by serve.
var stdin = bufio.NewReader(os.Stdin)

func ask(server, name string, id uint16, connect bool, count int, o askOptions) error {
	to, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return err
	}
	var c *net.UDPConn
	if connect {
		c, err = net.DialUDP("udp", nil, to)
	} else {
		c, err = net.ListenUDP("udp", nil)
	}
	if err != nil {
		return err
	}
	if o.hold {
		fmt.Println("socket")
		if _, err := stdin.ReadString('\n'); err != nil {
			return err
		}
	}
	if o.before != "" {
		if err := sendBefore(c, o.before); err != nil {
			return err
		}
	}
	for i := range count {
		q := query(name, id+uint16(i))
		if connect {
			_, err = c.Write(q)
		} else {
			_, err = c.WriteToUDP(q, to)
		}
		if err != nil {
			return err
		}
	}
	if count > 1 {
		fmt.Println("sent", count)
		return nil
	}
	serve(c)
	return nil
}

// serve prints "ready PORT" and every datagram's source and DNS id until
// stdin closes.
func serve(c *net.UDPConn) {
	fmt.Println("ready", c.LocalAddr().(*net.UDPAddr).Port)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, src, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			id := -1
			if n >= 2 {
				id = int(binary.BigEndian.Uint16(buf))
			}
			fmt.Println("got", src, id)
		}
	}()
	_, _ = io.Copy(io.Discard, stdin)
}

// sendBefore sends one datagram to addr from c's socket.
func sendBefore(c *net.UDPConn, addr string) error {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	_, err = c.WriteToUDP([]byte("not dns"), to)
	return err
}

func forge(from, to, name, cname, a string, id uint16) error {
	src, err := net.ResolveUDPAddr("udp", from)
	if err != nil {
		return err
	}
	dst, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Id, m.Response, m.RecursionAvailable = id, true, true
	owner := dns.Fqdn(name)
	if cname != "" {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300}, Target: dns.Fqdn(cname)})
		owner = dns.Fqdn(cname)
	}
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP(a).To4()})
	b, err := m.Pack()
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp", src)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.WriteToUDP(b, dst); err != nil {
		return err
	}
	fmt.Println("sent")
	return nil
}
