package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestReportNamesFlowsThroughTrustedResolver: with the default
// dns_resolver_users (root among them), a local caching resolver (dnsmasq
// running as root in the learned cgroup) resolves good.lab for a client
// the learner does not see (as nss-resolve or nscd would); another user
// (4242) resolves evil.lab, a name it controls, pointing at the same
// address. The victim (65534) reaches that address without resolving
// anything: report and export show good.lab for its flow, never evil.lab.
func TestReportNamesFlowsThroughTrustedResolver(t *testing.T) {
	lab.Require(t, "dig", "dnsmasq")
	l := startLearner(t)
	lab.StartDNS(t, l.pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "good.lab", IPs: []string{lab.ServerIP4}},
		lab.DNSRecord{Name: "evil.lab", IPs: []string{lab.ServerIP4}},
		lab.DNSRecord{Name: "ready.lab", IPs: []string{"192.0.2.1"}}, // the readiness check names nothing of ours
	)
	root := lab.As{UID: 0, GID: 0, Netns: l.pair.Client, Cgroup: l.cgroup}
	ctx, cancel := context.WithCancel(context.Background())
	resolver := root.Command(ctx, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
		"--bind-interfaces", "--listen-address=127.0.0.1", "--pid-file=", "--user=root", "--cache-size=0",
		"--server="+lab.ServerIP4)
	if err := resolver.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = resolver.Wait() })
	lab.WaitUDP(t, l.pair.Client, "127.0.0.1:53")

	if out := lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "dig", "+short", "@127.0.0.1", "good.lab"); !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig good.lab through the local resolver: %q", out)
	}
	attacker := lab.As{UID: 4242, GID: 4242, Netns: l.pair.Client, Cgroup: l.cgroup}
	if out := attacker.MustRun(t, "dig", "+short", "@"+lab.ServerIP4, "evil.lab"); !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("the attacker's dig: %q", out)
	}
	l.client.MustRun(t, "curl", "-sS", "-4", "http://"+lab.ServerIP4+":8080/")
	l.stop(t)

	var names []string
	for _, r := range l.report(t) {
		if r.UID == 65534 && r.Proto == "tcp" && r.IP == lab.ServerIP4 && r.Port == 8080 {
			names = r.Hostnames
		}
	}
	if !slices.Equal(names, []string{"good.lab"}) {
		t.Errorf("report: the victim's flow has names %v, want good.lab (the resolver's), not evil.lab", names)
	}
	table, _, err := runCLI(nil, "report", "--db", l.db)
	victim := userSection(table, "user nobody ")
	if err != nil || !strings.Contains(victim, "good.lab") || strings.Contains(victim, "evil.lab") {
		t.Errorf("report table (err %v): the victim's section\n%s\nwant good.lab and not evil.lab; whole table:\n%s", err, victim, table)
	}
	out, stderr, err := runCLI(nil, "export", "--db", l.db, "--host", "h1")
	if err != nil {
		t.Fatalf("export: %v\n%s", err, stderr)
	}
	var e store.Export
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	for _, f := range e.Flows {
		if f.UID == 65534 && f.Port == 8080 && !slices.Equal(f.Hostnames, []string{"good.lab"}) {
			t.Errorf("export: the victim's flow has names %v, want good.lab", f.Hostnames)
		}
	}
}

// userSection is the part of a report table from the line starting with
// head to the next blank line.
func userSection(table, head string) string {
	_, rest, ok := strings.Cut(table, head)
	if !ok {
		return ""
	}
	section, _, _ := strings.Cut(rest, "\n\n")
	return head + section
}

// TestUnknownResolverUserIsAClearError: a resolver user this host lacks,
// given by flag, environment or file, is an error naming the key.
func TestUnknownResolverUserIsAClearError(t *testing.T) {
	file := t.TempDir() + "/c.yaml"
	if err := os.WriteFile(file, []byte("dns_resolver_users: [default, no-such-resolver-xyz]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"run", "--dns-resolver-users", "no-such-resolver-xyz"}},
		{[]string{"EGRESS_DNS_RESOLVER_USERS=root,no-such-resolver-xyz"}, []string{"run"}},
		{nil, []string{"run", "--config", file}},
	} {
		_, stderr, err := runCLI(c.env, c.args...)
		if err == nil || !strings.Contains(stderr, "dns_resolver_users") || !strings.Contains(stderr, `"no-such-resolver-xyz"`) {
			t.Errorf("%v %v: err %v, stderr:\n%s", c.env, c.args, err, stderr)
		}
	}
}
