//go:build linux

package lab

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is a small DNS server in a namespace, for answers dnsmasq
// cannot give: addresses that change at every query, or forged answers.
type DNSServer struct {
	// Conn is the server's socket: tests can send forged datagrams from
	// it (from port 53 of the server's address).
	Conn net.PacketConn
	srv  *dns.Server
}

// ServeDNS answers DNS on UDP addr inside ns with h; t.Cleanup stops it.
func ServeDNS(t testing.TB, ns *Netns, addr string, h dns.HandlerFunc) *DNSServer {
	t.Helper()
	var pc net.PacketConn
	if err := InNetns(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatalf("listen dns %s in %s: %v", addr, ns.Name, err)
	}
	s := &DNSServer{Conn: pc}
	started := make(chan struct{})
	s.srv = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = s.srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(Patience):
		t.Fatalf("dns server did not start within %v", Patience)
	}
	t.Cleanup(func() { _ = s.srv.Shutdown() })
	return s
}

// A builds an A record.
func A(name, ip string, ttl uint32) dns.RR {
	return &dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip).To4()}
}
