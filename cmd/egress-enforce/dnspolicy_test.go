package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestDNSPolicyCommands is issue 18's acceptance on a lab, with the real
// tools: learn what two users ask (a search domain included), apply the
// DNS policy in enforce, and check that learned names resolve, the other
// user's names, a random label and a 200-query tunnel-like burst are
// stopped, that denied and reconcile show them, and that status says so
// loudly when the policy is gone.
func TestDNSPolicyCommands(t *testing.T) {
	lab.Require(t, "dig", "dnsmasq", "getent", "nft")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "api.example.lab", IPs: []string{"10.77.0.80"}},
		lab.DNSRecord{Name: "x.cdn.lab", IPs: []string{"10.77.0.81"}},
		lab.DNSRecord{Name: "www.lab", IPs: []string{"10.77.0.82"}})
	dir := t.TempDir()
	resolv := "/etc/netns/" + pair.Client.Name + "/resolv.conf"
	if err := os.MkdirAll(filepath.Dir(resolv), 0o755); err != nil {
		t.Fatal(err)
	}
	// ndots:5: glibc asks api.example.lab.corp.lab (NXDOMAIN) first.
	if err := os.WriteFile(resolv, []byte("nameserver "+lab.ServerIP4+"\nsearch corp.lab\noptions ndots:5 timeout:1 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("db: %s\nnetns: %s\nresolv_conf: %s\ndns_policy: enforce\ndns_allow:\n  - {name: \"*.cdn.lab\"}\n",
		filepath.Join(dir, "baseline.db"), pair.Client.Name, resolv)
	conf, env, where, alice, bob := dnsPolicyLab(t, pair, cg, yaml)

	// Before learning: nothing to enforce.
	mustFail(t, enforceBin, env, []string{"store does not exist"}, append([]string{"dns-policy", "apply"}, where...)...)
	learner, lerr := startLearner(t, env, "--cgroup", cg.Path, "--flush-interval", "200ms")
	alice.MustRun(t, "getent", "ahosts", "api.example.lab")
	bob.MustRun(t, "dig", "+short", "@"+lab.ServerIP4, "www.lab")
	stopLearner(t, learner, lerr)

	out := mustRun(t, enforceBin, env, append([]string{"dns-policy", "apply"}, where...)...)
	if !strings.Contains(out, "dns policy enforce attached") || !strings.Contains(out, "1 dns_allow") {
		t.Fatalf("apply: %s", out)
	}
	if out := mustRun(t, enforceBin, env, append([]string{"dns-policy", "status"}, where...)...); !strings.Contains(out, "attached in enforce") {
		t.Errorf("status: %s", out)
	}
	metrics := lab.FreeAddr(t)
	watch, _, werr := start(t, env, enforceBin, append([]string{"dns-policy", "watch", "--flush", "100ms", "--metrics-addr", metrics}, where...)...)
	lab.Await(t, "the watch", func() bool { return strings.Contains(werr.String(), "watching dns policy reports") })

	// Learned, with the search domain's NXDOMAIN try: resolves.
	if out := alice.MustRun(t, "getent", "ahosts", "api.example.lab"); !strings.Contains(out, "10.77.0.80") {
		t.Errorf("alice's learned name: %q", out)
	}
	if got := strings.TrimSpace(bob.MustRun(t, "dig", "+short", "@"+lab.ServerIP4, "a.x.cdn.lab")); got != "" {
		t.Logf("wildcard: %q", got) // dnsmasq has no a.x.cdn.lab: NXDOMAIN, but an answer
	}
	// Bob never asked for alice's name; a random label under a new domain.
	if _, err := bob.Run("dig", "+time=1", "+tries=1", "@"+lab.ServerIP4, "api.example.lab"); err == nil {
		t.Error("bob resolved alice's name")
	}
	if _, err := alice.Run("dig", "+time=1", "+tries=1", "@"+lab.ServerIP4, "q2fmzxr0.tunnel.evil"); err == nil {
		t.Error("a random label resolved")
	}
	var names []string
	for i := range 200 {
		names = append(names, fmt.Sprintf("mzxw6ytboi%04dgm5qgcy3uebxgc.t.exfil.evil", i))
	}
	// One dig a name, all at once (each waits out its timeout after EPERM).
	_, _ = alice.Run("sh", "-c", "for n in "+strings.Join(names, " ")+"; do dig +time=1 +tries=1 @"+lab.ServerIP4+" $n >/dev/null 2>&1 & done; wait")
	lab.Await(t, "the burst's reports", func() bool {
		return strings.Count(werr.String(), "t.exfil.evil") >= 200 && strings.Contains(werr.String(), "tunnelling signature")
	})
	fams := lab.Scrape(t, "http://"+metrics+"/metrics")
	if v, _ := lab.MetricValue(fams, "egress_dns_tunnel_suspected_total", map[string]string{"uid": "1000", "parent": "t.exfil.evil"}); v != 1 {
		t.Errorf("tunnel metric: %v", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_dns_policy_denied_parent_total", map[string]string{"uid": "1000", "parent": "t.exfil.evil"}); v != 200 {
		t.Errorf("parent metric: %v", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_dns_policy_denied_total", map[string]string{"uid": "1001", "verdict": "dropped"}); v != 1 {
		t.Errorf("denied metric: %v", v)
	}
	_ = watch.Process.Signal(os.Interrupt)
	_ = watch.Wait()

	denied := mustRun(t, enforceBin, env, "denied")
	lab.WantAll(t, "denied", denied, "q2fmzxr0.tunnel.evil", "t.exfil.evil (200 names", "TUNNELLING SIGNATURE", "1001", "example.lab")
	checkDeniedByUser(t, mustRun(t, enforceBin, env, "denied", "--json"), werr.String())
	rec := mustRun(t, enforceBin, env, "reconcile")
	lab.WantAll(t, "reconcile", rec, "+ ", "q2fmzxr0.tunnel.evil", "not proposed: 200 names under t.exfil.evil")
	if strings.Contains(rec, "mzxw6ytboi0001") {
		t.Errorf("reconcile proposes the tunnel's names:\n%s", rec)
	}

	mustRun(t, enforceBin, env, append([]string{"dns-policy", "remove"}, where...)...)
	mustFail(t, enforceBin, env, []string{"NOT checked"}, append([]string{"dns-policy", "status"}, where...)...)
	if out := mustRun(t, enforceBin, env, "status"); !strings.Contains(out, "PROBLEM") || !strings.Contains(out, "NOT checked") {
		t.Errorf("status without the policy:\n%s", out)
	}

	// The table's apply puts it back (cgroup: from the configuration).
	yaml += "cgroup: " + cg.Path + "\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, enforceBin, env, "apply", "--mode", "audit", "--pin-dir", where[3])
	if !strings.Contains(out, "dns policy enforce attached to "+cg.Path) {
		t.Errorf("apply: %s", out)
	}
	mustRun(t, enforceBin, env, append([]string{"dns-policy", "status"}, where...)...)
	if _, err := bob.Run("dig", "+time=1", "+tries=1", "@"+lab.ServerIP4, "api.example.lab"); err == nil {
		t.Error("bob resolved alice's name after apply")
	}
	// A reboot empties the bpf file system: restore puts it back too.
	mustRun(t, enforceBin, env, append([]string{"dns-policy", "remove"}, where...)...)
	out = mustRun(t, enforceBin, env, "restore", "--pin-dir", where[3])
	lab.WantAll(t, "restore", out, "dns policy enforce attached to "+cg.Path)
	mustRun(t, enforceBin, env, append([]string{"dns-policy", "status"}, where...)...)
	// Removing the table leaves the DNS policy, and says so.
	out = mustRun(t, enforceBin, env, "remove", "--pin-dir", where[3])
	lab.WantAll(t, "remove", out, "the DNS policy stays attached to "+cg.Path+" (enforce", "dns-policy remove detaches it")
	mustRun(t, enforceBin, env, append([]string{"dns-policy", "remove"}, where...)...)
	if out := mustRun(t, enforceBin, env, "remove", "--pin-dir", where[3]); strings.Contains(out, "DNS policy stays") {
		t.Errorf("remove after dns-policy remove still speaks of a DNS policy:\n%s", out)
	}
}

// checkDeniedByUser: "denied --json" names each denied query with the uid
// that asked (the random label alice's, alice's name bob's), and none of
// alice's learned lookups was denied: not the search domain's NXDOMAIN try
// (api.example.lab.corp.lab), which, stopped, would have cost her a
// resolver timeout or the lookup. The watch's log (watchLog) says the same.
func checkDeniedByUser(t *testing.T, out, watchLog string) {
	t.Helper()
	var d struct {
		DNS struct {
			Summary struct {
				Users []struct {
					UID uint32 `json:"uid"`
					Top []struct {
						Name    string `json:"name"`
						Dropped uint64 `json:"dropped"`
					} `json:"top"`
				} `json:"users"`
			} `json:"summary"`
		} `json:"dns"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("denied --json: %v\n%s", err, out)
	}
	dropped := map[string]uint32{} // name -> uid
	for _, u := range d.DNS.Summary.Users {
		for _, c := range u.Top {
			if c.Dropped > 0 {
				dropped[c.Name] = u.UID
			}
		}
	}
	for name, uid := range map[string]uint32{"q2fmzxr0.tunnel.evil": 1000, "api.example.lab": 1001} {
		if got, ok := dropped[name]; !ok || got != uid {
			t.Errorf("denied --json: %s dropped for uid %d (found: %v), want uid %d", name, got, ok, uid)
		}
	}
	for name, uid := range dropped {
		if strings.HasSuffix(name, "corp.lab") {
			t.Errorf("the learned search-domain try %s was dropped for uid %d", name, uid)
		}
	}
	if strings.Contains(watchLog, "corp.lab") {
		t.Errorf("the watch reported a search-domain try:\n%s", watchLog)
	}
}

// dnsPolicyLab writes yaml as the tools' configuration and gives its path,
// the environment that points the tools at it, the flags that place the DNS policy
// (the lab's cgroup, a bpffs of the test's own), and alice (uid 1000) and
// bob (1001) in the lab's client namespace and cgroup.
func dnsPolicyLab(t *testing.T, pair *lab.Pair, cg *lab.Cgroup, yaml string) (conf string, env, where []string, alice, bob lab.As) {
	t.Helper()
	conf = filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env = []string{"EGRESS_CONFIG=" + conf}
	where = []string{"--cgroup", cg.Path, "--pin-dir", lab.NewBPFFS(t)}
	alice = lab.As{UID: 1000, GID: 1000, Netns: pair.Client, Cgroup: cg}
	bob = lab.As{UID: 1001, GID: 1001, Netns: pair.Client, Cgroup: cg}
	return conf, env, where, alice, bob
}
