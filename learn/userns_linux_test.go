//go:build linux

package learn

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestUserNamespaceCannotPoseAsAnotherUser: a local user (4242) makes a
// user namespace of its own, with a network namespace, in which it is
// the resolver's UID or the victim's, runs a DNS server there and asks it
// for a name pointing at the victim's destination. The answer is
// attributed to 4242, its real UID: it names neither as the resolver nor
// as the victim.
func TestUserNamespaceCannotPoseAsAnotherUser(t *testing.T) {
	lab.Require(t, "unshare", "dnsmasq", "dig", "sh")
	d := newDNSLab(t)
	cfg := d.config(DefaultProbeOptions())
	cfg.Resolvers = []uint32{resolverUID}
	r := startRun(t, cfg)

	for _, inner := range []int{resolverUID, 65534} {
		name := fmt.Sprintf("userns-%d.lab", inner)
		script := fmt.Sprintf(`set -e
ip link set lo up
dnsmasq --keep-in-foreground --log-facility=- --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 --pid-file= --user= --address=/%[1]s/%[2]s &
pid=$!
until dig +short +tries=1 +time=1 @127.0.0.1 %[1]s | grep -qx %[2]s; do kill -0 $pid; done
kill $pid
wait $pid || true
id -u`, name, lab.ServerIP4)
		out := d.attacker.MustRun(t, "unshare", "--user", fmt.Sprintf("--map-user=%d", inner), "--net", "--keep-caps", "sh", "-c", script)
		if !strings.HasSuffix(strings.TrimSpace(out), fmt.Sprint(inner)) {
			t.Fatalf("the attacker is not uid %d in its namespace:\n%s", inner, out)
		}
	}

	names, sum := d.victimNames(t, r)
	if len(names) != 0 {
		t.Errorf("the victim's flow has names %v, want none", names)
	}
	if s := sum.Probe.DNS; s.Matched < 2 {
		t.Errorf("dns stats %+v, want the attacker's answers used", s)
	}
	_, snap := flowsOf(t, d.db)
	uids := map[string][]uint32{}
	for _, e := range snap.DNS {
		if e.IP == netip.MustParseAddr(lab.ServerIP4) {
			for _, n := range e.Names {
				uids[n.Name] = n.UIDs
			}
		}
	}
	for _, inner := range []int{resolverUID, 65534} {
		name := fmt.Sprintf("userns-%d.lab", inner)
		if got := uids[name]; !slices.Equal(got, []uint32{4242}) {
			t.Errorf("the answer for %s is attributed to %v, want the attacker's real uid 4242", name, got)
		}
	}
}
