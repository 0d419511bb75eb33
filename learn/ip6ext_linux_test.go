//go:build linux

package learn

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/internal/lab"
)

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
	names, sum := d.victimNames(t, r)
	if !slices.Contains(names, "ext.lab") {
		t.Errorf("the victim's flow has names %v, want ext.lab (its answer came with a destination options header)", names)
	}
	if s := sum.Probe.DNS; s.Matched != 1 {
		t.Errorf("dns stats %+v, want the answer used", s)
	}
}
