//go:build linux

package monitor

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/internal/lab"
)

// TestSockDiagFindsTheSendersCgroup: a TCP connect whose SYNs an output
// rule drops keeps its socket while it retries; sock_diag, asked from
// outside the namespace by the packet's addresses and ports, gives the
// cgroup the sender runs in.
func TestSockDiagFindsTheSendersCgroup(t *testing.T) {
	lab.Require(t, "nft", "curl", "ss")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.MustRun(t, "ip", "netns", "exec", pair.Client.Name, "nft",
		"add table inet sdtest; add chain inet sdtest o { type filter hook output priority 0; }; add rule inet sdtest o tcp dport 8089 drop")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	curl := lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg}.Command(ctx, "curl", "-sS", "http://"+lab.ServerIP4+":8089/")
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = curl.Wait() }()
	sport, d, want := awaitSender(t, pair, cg, "the connect", "-tnH", "state", "syn-sent")
	if got := d.cgroupID(6, netip.MustParseAddr(lab.ClientIP4), sport, netip.MustParseAddr(lab.ServerIP4), 8089); got != want {
		t.Errorf("cgroup id %d, want %d (the cgroup's inode)", got, want)
	}
	if got := d.cgroupID(6, netip.MustParseAddr(lab.ClientIP4), sport+1, netip.MustParseAddr(lab.ServerIP4), 8089); got != 0 {
		t.Errorf("another port: cgroup id %d, want 0", got)
	}
}

// awaitSender waits until ss, with args, lists a socket of the lab's client
// address in the client namespace, and gives its port, a sock_diag handle
// on that namespace (closed with the test) and the cgroup's inode, the id
// sock_diag should give.
func awaitSender(t *testing.T, pair *lab.Pair, cg *lab.Cgroup, what string, args ...string) (uint16, *sockDiag, uint64) {
	t.Helper()
	var sport uint16
	lab.Await(t, what, func() bool {
		out := lab.MustRun(t, "ip", append([]string{"netns", "exec", pair.Client.Name, "ss"}, args...)...)
		for _, f := range strings.Fields(out) {
			if a, p, ok := strings.Cut(f, ":"); ok && a == lab.ClientIP4 {
				n, _ := strconv.Atoi(p)
				sport = uint16(n)
				return true
			}
		}
		return false
	})
	d, err := openSockDiag(nft.Target{Netns: pair.Client.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	fi, err := os.Stat(cg.Path)
	if err != nil {
		t.Fatal(err)
	}
	return sport, d, inode(t, fi)
}

func inode(t *testing.T, fi os.FileInfo) uint64 {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatal("no inode")
	}
	return st.Ino
}
