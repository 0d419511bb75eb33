//go:build linux

package monitor

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/nft"
)

// The log gives a packet's uid, not its socket's cgroup. While the
// application still holds the socket (a TCP connect waiting for its
// SYN's answer, a UDP socket that saw sendto fail), sock_diag finds it by
// the packet's addresses and ports and tells its cgroup v2 id.

// sockDiag is a NETLINK_SOCK_DIAG socket of the target namespace.
type sockDiag struct {
	mu  sync.Mutex
	fd  int
	buf []byte
}

// openSockDiag opens the socket inside the target's namespace (a socket
// stays in the namespace it was made in).
func openSockDiag(t nft.Target) (*sockDiag, error) {
	var fd int
	mk := func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	}
	var err error
	if p := t.Path(); p == "" {
		err = mk()
	} else {
		err = inNetns(p, mk)
	}
	if err != nil {
		return nil, fmt.Errorf("open sock_diag in %s: %w", t, err)
	}
	tv := unix.Timeval{Usec: 200000}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &sockDiag{fd: fd, buf: make([]byte, 8192)}, nil
}

// inNetns runs fn on a locked thread inside the namespace at path, then
// returns the thread to its own namespace.
func inNetns(path string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer self.Close()
	ns, err := os.Open(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is in the wrong namespace: let it die with the
		// lock held rather than serve other goroutines.
		runtime.LockOSThread()
		return fmt.Errorf("return from %s: %w", path, err)
	}
	return ferr
}

func (d *sockDiag) Close() error { return unix.Close(d.fd) }

// inetDiagCgroupID is INET_DIAG_CGROUP_ID (linux/inet_diag.h).
const inetDiagCgroupID = 21

// cgroupID is the cgroup v2 id of the local socket that sent proto from
// src:sport to dst:dport; 0 when no socket has those (closed already).
func (d *sockDiag) cgroupID(proto uint8, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) uint64 {
	if proto != unix.IPPROTO_TCP && proto != unix.IPPROTO_UDP || !src.IsValid() || !dst.IsValid() {
		return 0
	}
	family := byte(unix.AF_INET)
	if src.Is6() && !src.Is4In6() {
		family = unix.AF_INET6
	}
	// udp_diag looks the socket up as an arriving datagram would find it:
	// its "src" is the remote end (net/ipv4/udp_diag.c: "src and dst are
	// swapped for historical reasons"); tcp_diag takes the local end.
	if proto == unix.IPPROTO_UDP {
		src, sport, dst, dport = dst, dport, src, sport
	}
	// nlmsghdr (16) + inet_diag_req_v2 (56): family, protocol, ext, pad,
	// states, then inet_diag_sockid: sport, dport (network order),
	// src[16], dst[16], if, cookie[2] (no cookie: all ones).
	req := make([]byte, 16+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	r := req[16:]
	r[0], r[1] = family, proto
	binary.NativeEndian.PutUint32(r[4:], 0xffffffff) // every state
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], sport)
	binary.BigEndian.PutUint16(id[2:], dport)
	copy(id[4:20], addrBytes(src))
	copy(id[20:36], addrBytes(dst))
	binary.NativeEndian.PutUint32(id[40:], 0xffffffff)
	binary.NativeEndian.PutUint32(id[44:], 0xffffffff)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0
	}
	n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
	if err != nil || n < 16+72 {
		return 0
	}
	msg := d.buf[:n]
	if binary.NativeEndian.Uint16(msg[4:]) != unix.SOCK_DIAG_BY_FAMILY {
		return 0 // NLMSG_ERROR: no such socket
	}
	// inet_diag_msg is 72 bytes; attributes (rtattr: len, type) follow.
	for a := msg[16+72 : min(n, int(binary.NativeEndian.Uint32(msg[0:])))]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a[0:]))
		if l < 4 || l > len(a) {
			break
		}
		if binary.NativeEndian.Uint16(a[2:]) == inetDiagCgroupID && l >= 12 {
			return binary.NativeEndian.Uint64(a[4:12])
		}
		a = a[min(len(a), (l+3)&^3):]
	}
	return 0
}

// addrBytes is an address as inet_diag_sockid holds it: IPv4 in the first
// four bytes.
func addrBytes(a netip.Addr) []byte {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}
