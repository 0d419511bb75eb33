//go:build linux

package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/namecheck"
)

// TestLiveLinesEscapeNames: the live lines of namecheck (the name a
// client presented: a local user chooses the TLS SNI or Host bytes),
// follow (the name a DNS answer matched) and services (a cgroup path)
// write it escaped, one event one line.
func TestLiveLinesEscapeNames(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.1")
	lines := map[string]string{
		"namecheck": refusedLine(namecheck.Event{UID: 1000, IP: ip, Proto: 6, Port: 443, Kind: "tls", Verdict: "mismatch", Name: "a.lab\n12:00:00 audited uid 0\x1b[2J"}),
		"follow":    addressLine(follow.Address{UID: 1000, Name: "x\t.cdn.lab\r", IP: ip, Proto: 6, Port: 443, New: true}),
		"services":  changeLine(nft.ServiceChange{Service: "system.slice/evil\x1b]0;x\a.service", To: 5}),
	}
	for what, want := range map[string]string{"namecheck": `a.lab\n12:00:00 audited uid 0\x1b[2J`, "follow": `x\t.cdn.lab\r`, "services": `evil\x1b]0;x\a.service`} {
		checkEscaped(t, what, lines[what], []string{want})
		if strings.Contains(lines[what], "\n") {
			t.Errorf("%s: %q is more than one line", what, lines[what])
		}
	}
}
