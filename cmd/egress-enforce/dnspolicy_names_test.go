package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestDNSPolicyFollowNames: in enforce, a name a follow_names rule allows
// resolves without having been learned: a user's wildcard for that user
// only (not the bare parent, not another user), a rule without a user for
// everyone. The other tests' names all come from learning or dns_allow.
func TestDNSPolicyFollowNames(t *testing.T) {
	lab.Require(t, "dig", "dnsmasq", "nft")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "a.svc.lab", IPs: []string{"10.77.0.90"}},
		lab.DNSRecord{Name: "svc.lab", IPs: []string{"10.77.0.92"}},
		lab.DNSRecord{Name: "alt.lab", IPs: []string{"10.77.0.91"}})
	_, env, where, alice, bob := dnsPolicyLab(t, pair, cg, fmt.Sprintf(`db: %s
netns: %s
dns_policy: enforce
dns_servers: [%s]
follow_names:
  - {name: "*.svc.lab", user: "1001", proto: tcp, port: 443}
  - {name: alt.lab, proto: tcp, port: 443}
`, storeWith(t), pair.Client.Name, lab.ServerIP4))

	// Nothing learned: refused without --force, whatever follow_names says.
	mustFail(t, enforceBin, env, []string{"--force"}, append([]string{"dns-policy", "apply"}, where...)...)
	out := mustRun(t, enforceBin, env, append([]string{"dns-policy", "apply", "--force"}, where...)...)
	if !strings.Contains(out, "dns policy enforce attached") || !strings.Contains(out, "2 follow_names") {
		t.Fatalf("apply: %s", out)
	}
	resolves := func(a lab.As, name string) string {
		out, err := a.Run("dig", "+short", "+time=1", "+tries=1", "@"+lab.ServerIP4, name)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(out)
	}
	if got := resolves(bob, "a.svc.lab"); got != "10.77.0.90" {
		t.Errorf("bob's follow_names wildcard: a.svc.lab resolved to %q", got)
	}
	if got := resolves(alice, "a.svc.lab"); got != "" {
		t.Errorf("alice resolved a.svc.lab (%q), which only bob's rule allows", got)
	}
	if got := resolves(bob, "svc.lab"); got != "" {
		t.Errorf("bob resolved svc.lab (%q): *.svc.lab is not svc.lab itself", got)
	}
	for _, a := range []lab.As{alice, bob} {
		if got := resolves(a, "alt.lab"); got != "10.77.0.91" {
			t.Errorf("uid %d: the rule for everyone: alt.lab resolved to %q", a.UID, got)
		}
	}
}
