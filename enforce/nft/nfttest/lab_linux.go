//go:build linux

// Package nfttest is the kernel lab of the tests of our table: a client
// namespace where the table goes and a server namespace it talks to, the
// baseline a learner would have recorded there, and ways to load, list and
// probe the table.
package nfttest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// Lab is a server namespace with HTTP on 8080 and 8081, a UDP
// counter on 9999 and dnsmasq serving web.lab, and a client namespace
// where the tables go.
type Lab struct {
	Pair   *lab.Pair
	Target nft.Target
	UDP    *UDPCounter
	Nobody lab.As // uid 65534
	Other  lab.As // uid 4242
}

// UDPCounter counts the datagrams the server received, per payload tag.
type UDPCounter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (u *UDPCounter) Count(tag string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[tag]
}

// NewLab builds the lab; everything goes away with the test.
func NewLab(t *testing.T) *Lab {
	t.Helper()
	lab.Require(t, "nft", "curl", "dig", "socat", "dnsmasq")
	pair := lab.NewPair(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "web.lab", IPs: []string{lab.ServerIP4, lab.ServerIP6}})
	u := &UDPCounter{seen: map[string]int{}}
	lab.ServeUDP(t, pair.Server, "udp", ":9999", func(b []byte) {
		u.mu.Lock()
		u.seen[strings.TrimSpace(string(b))]++
		u.mu.Unlock()
	})
	return &Lab{
		Pair:   pair,
		Target: nft.Target{Netns: pair.Client.Name},
		UDP:    u,
		Nobody: lab.As{UID: 65534, GID: 65534, Netns: pair.Client},
		Other:  lab.As{UID: 4242, GID: 4242, Netns: pair.Client},
	}
}

// Baseline is what a learner would have recorded: nobody reaches web.lab
// over IPv4 and IPv6 on 8080, uid 4242 sends UDP to 9999, root connects
// to 8080 (the load test uses it).
func Baseline() []store.Flow {
	return []store.Flow{
		plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP4, 8080, 4, plantest.T0, "web.lab"),
		plantest.Flow(65534, plan.ProtoTCP, lab.ServerIP6, 8080, 2, plantest.T0, "web.lab"),
		plantest.Flow(4242, plan.ProtoUDP, lab.ServerIP4, 9999, 9, plantest.T0),
		plantest.Flow(0, plan.ProtoTCP, lab.ServerIP4, 8080, 1, plantest.T0),
	}
}

// Options are the lab table's: its DNS server, NFLOG group 77.
func Options(mode plan.Mode) plan.Options {
	return plan.Options{Mode: mode, DNSServers: []netip.Addr{netip.MustParseAddr(lab.ServerIP4)}, NFLOGGroup: 77}
}

// Apply applies the lab's table in mode.
func (l *Lab) Apply(t *testing.T, mode plan.Mode) *plan.Plan {
	t.Helper()
	p := plan.Build(Baseline(), Options(mode))
	if _, err := nft.Open(l.Target).Apply(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Curl fetches url as a; the time limit is generous (an allowed flow
// answers at once), so a slow machine cannot fail it.
func Curl(a lab.As, url string, extra ...string) error {
	_, err := a.Run(append([]string{"curl", "-sS", "--max-time", "30", url}, extra...)...)
	return err
}

// BlockedTCP runs curl to url as a, a flow the table should drop, until the
// default drop counter shows the drop: the SYN and the SYN sent again,
// which only happens when no answer came (the server answers an accepted
// SYN at once). curl has no time limit: it runs until the drop is seen.
// See lab.As.Blocked.
func (l *Lab) BlockedTCP(t *testing.T, a lab.As, url string, extra ...string) error {
	t.Helper()
	return l.Blocked(t, a, 2, append([]string{"curl", "-sS", url}, extra...)...)
}

// BlockedUDP sends a datagram tagged tag as a, a flow the table should
// drop. The drop happens in the sender's own sendto, which fails with
// EPERM, after the default counter took the datagram.
func (l *Lab) BlockedUDP(t *testing.T, a lab.As, tag string) error {
	t.Helper()
	before := l.DefaultPackets(t)
	out, err := a.Run(udpArgs(tag)...)
	switch after := l.DefaultPackets(t); {
	case err == nil:
		return fmt.Errorf("datagram %s got through", tag)
	case !strings.Contains(out, "Operation not permitted"):
		return fmt.Errorf("datagram %s: the sender failed, but not from a drop: %v", tag, err)
	case after != before+1:
		return fmt.Errorf("datagram %s: the default counter went from %d to %d, want one more", tag, before, after)
	}
	return nil
}

// Blocked runs args as a until the default counter took packets more.
func (l *Lab) Blocked(t *testing.T, a lab.As, packets uint64, args ...string) error {
	t.Helper()
	before := l.DefaultPackets(t)
	return a.Blocked(func() bool { return l.DefaultPackets(t) >= before+packets }, args...)
}

// SendUDP sends one datagram tagged tag to the UDP counter. A dropped
// send fails with EPERM, so the exit status is not checked: the counter
// tells what arrived.
func (l *Lab) SendUDP(a lab.As, tag string) {
	_, _ = a.Run(udpArgs(tag)...)
}

func udpArgs(tag string) []string {
	return []string{"bash", "-c", "echo " + tag + " | socat -u - UDP4-SENDTO:" + lab.ServerIP4 + ":9999"}
}

// DefaultPackets reads the default rules' packet counter.
func (l *Lab) DefaultPackets(t *testing.T) uint64 {
	t.Helper()
	st, err := nft.Open(l.Target).Status(plan.DefaultTable, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Default == nil {
		t.Fatal("no default counter")
	}
	return st.Default.Packets
}

// LoadText loads the plan's nft text into ns with the nft binary.
func LoadText(t *testing.T, p *plan.Plan, ns *lab.Netns) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "egress.nft")
	if err := os.WriteFile(file, []byte(p.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-f", file)
}

// Burst sends one UDP datagram to each of n ports of the server as a, from
// bash (a redirection to /dev/udp per datagram), and returns how many
// sends succeeded and failed: a packet the output hook drops fails with
// EPERM.
func Burst(t *testing.T, a lab.As, first, n int) (ok, failed int) {
	t.Helper()
	script := fmt.Sprintf(`ok=0; no=0; for p in $(seq %d %d); do if echo x 2>/dev/null >/dev/udp/%s/$p; then ok=$((ok+1)); else no=$((no+1)); fi; done; echo $ok $no`,
		first, first+n-1, lab.ServerIP4)
	out := a.MustRun(t, "bash", "-c", script)
	if _, err := fmt.Sscan(out, &ok, &failed); err != nil {
		t.Fatalf("burst printed %q", out)
	}
	return ok, failed
}
