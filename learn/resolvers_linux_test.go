//go:build linux

package learn

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// resolverUID is the user the local caching resolver of these tests runs
// as: the one user whose answers may name other users' flows.
const resolverUID = 4343

// startResolver runs dnsmasq as a local caching resolver on 127.0.0.1:53
// of the client namespace, as resolverUID inside the test cgroup,
// forwarding to the lab server. Its readiness check (a query from outside
// the cgroup) happens before any learner starts.
func startResolver(t *testing.T, d *dnsLab) {
	t.Helper()
	lab.Require(t, "dnsmasq", "dig")
	as := lab.As{UID: resolverUID, GID: resolverUID, Netns: d.pair.Client, Cgroup: d.cg}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := as.Command(ctx, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
		"--bind-interfaces", "--listen-address=127.0.0.1", "--pid-file=", "--user=", "--cache-size=0",
		"--server="+lab.ServerIP4)
	out := &lab.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", out.String())
		}
	})
	lab.WaitUDP(t, d.pair.Client, "127.0.0.1:53")
}

// askResolver resolves name through the local resolver from outside the
// cgroup, as nss-resolve (varlink) or nscd would for a client: the learner
// sees only the resolver's own query and answer.
func askResolver(t *testing.T, d *dnsLab, name string) {
	t.Helper()
	out := lab.MustRun(t, "ip", "netns", "exec", d.pair.Client.Name, "dig", "+short", "+tries=1", "@127.0.0.1", name)
	if !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig %s through the local resolver: %q", name, out)
	}
}

// resolverRun is a dnsLab with the local resolver, a learner that trusts
// it, and good.lab resolved through it; the lab server also answers
// names (pointing at itself).
func resolverRun(t *testing.T, names ...string) (*dnsLab, *running) {
	t.Helper()
	d := newDNSLab(t)
	served := map[string]chan struct{}{"good.lab": nil, "ready.lab": nil}
	for _, n := range names {
		served[n] = nil
	}
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(served))
	startResolver(t, d)
	cfg := d.config(DefaultProbeOptions())
	cfg.Resolvers = []uint32{resolverUID}
	r := startRun(t, cfg)
	askResolver(t, d, "good.lab")
	return d, r
}

// dig resolves name at the lab server as as.
func dig(t *testing.T, as lab.As, name string) {
	t.Helper()
	if out := as.MustRun(t, "dig", "+short", "+tries=1", "@"+lab.ServerIP4, name); !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig %s as %d: %q", name, as.UID, out)
	}
}

// TestOtherUsersAnswersDoNotNameFlows: the attack of issue 9. A local
// user (4242) resolves a name it controls (evil.lab, served by the lab's
// DNS server) that points at the address the victim (65534) reaches
// without resolving anything. The victim's flow must not get that name:
// names from someone else's answers come only from a trusted local
// resolver (dnsmasq running as resolverUID), whose answer for good.lab
// still names the flow.
func TestOtherUsersAnswersDoNotNameFlows(t *testing.T) {
	d, r := resolverRun(t, "evil.lab")
	dig(t, d.attacker, "evil.lab")
	d.attacker.MustRun(t, "curl", "-sS", "-4", "http://"+lab.ServerIP4+":8080/")

	// Only good.lab, from the trusted resolver; the resolver's and the
	// attacker's answers both used.
	d.victimNamedOnly(t, r, 2, "good.lab")
	// The attacker's own flow to the address carries the name it resolved.
	flows, _ := flowsOf(t, d.db)
	if f := flows["4242 tcp "+lab.ServerIP4+":8080"]; !slices.Equal(f.Hostnames, []string{"evil.lab"}) {
		t.Errorf("the attacker's flow has names %v, want its own lookup evil.lab", f.Hostnames)
	}
}

// TestResolverAnswersAreNotOwnNames: an answer the trusted resolver
// received names a flow of another user only when that user resolved
// nothing for the address itself; a user that did keeps its own names.
func TestResolverAnswersAreNotOwnNames(t *testing.T) {
	d, r := resolverRun(t, "mine.lab")
	dig(t, d.victim, "mine.lab")
	names, _ := d.victimNames(t, r)
	if !slices.Equal(names, []string{"mine.lab"}) {
		t.Errorf("the flow has names %v, want its own lookup mine.lab", names)
	}
}
