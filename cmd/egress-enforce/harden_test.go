package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
)

// The tests of this file attack the enforcer's inputs (issue 9): each one
// failed on the code before the fix. They decode the commands' JSON into
// their own structs, so they build against that code too.

// storeWith creates a store holding flows (none: an empty store).
func storeWith(t *testing.T, flows ...store.Flow) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) > 0 {
		if err := st.Apply(&store.Batch{Flows: flows}); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func tcpFlow(uid uint32, ip string, port uint16) store.Flow {
	now := time.Now()
	return store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port},
		Hits: 3, FirstSeen: now, LastSeen: now, Processes: []string{"curl"}}
}

// tables lists the tables of a namespace.
func tables(t *testing.T, ns *lab.Netns) string {
	t.Helper()
	return strings.TrimSpace(lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "list", "tables"))
}

// TestGenerateRefusesHostileExports: "generate --from" refuses an export
// whose host name, user names or addresses could write nft commands into
// the script, and names what it refused; a hostname that is not a DNS
// name is left out with a warning, and the script loads as our table only.
func TestGenerateRefusesHostileExports(t *testing.T) {
	dir := t.TempDir()
	flow := `{"uid": 0, "proto": 6, "ip": "192.0.2.1", "port": 443, "hits": 3, "first_seen": "2026-11-20T09:00:00Z", "last_seen": "2026-11-20T10:00:00Z"`
	for name, c := range map[string]struct{ export, want string }{
		"host": {`{"format": "egress-baseline/1", "host": "h1\nadd table inet injected\n#", "flows": [` + flow + `}]}`, "host"},
		"zone": {`{"format": "egress-baseline/1", "host": "h1", "flows": [` + flow + `},
			{"uid": 0, "proto": 1, "ip": "fe80::1%x\nadd table inet injected\n#", "port": 0, "hits": 3}]}`, "zone"},
		"user": {`{"format": "egress-baseline/1", "host": "h1", "users": {"0": "root\nadd table inet injected"}, "flows": [` + flow + `}]}`, "user"},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		if err := os.WriteFile(file, []byte(c.export), 0o600); err != nil {
			t.Fatal(err)
		}
		stderr := mustFail(t, enforceBin, nil, []string{file, c.want}, "generate", "--db", filepath.Join(dir, "none.db"), "--from", file)
		if strings.Contains(stderr, "\nadd table") {
			t.Errorf("%s: the error prints the hostile text raw:\n%s", name, stderr)
		}
	}

	names := filepath.Join(dir, "names.json")
	os.WriteFile(names, []byte(`{"format": "egress-baseline/1", "host": "h1", "flows": [`+flow+`,
		"hostnames": ["a\"\nadd table inet injected\n#", "ok.example"]}]}`), 0o600)
	script := filepath.Join(dir, "names.nft")
	_, stderr, err := run(enforceBin, nil, "generate", "--db", filepath.Join(dir, "none.db"), "--from", names, "-o", script)
	if err != nil || !strings.Contains(stderr, "left out") {
		t.Fatalf("generate with a bad hostname: %v\n%s", err, stderr)
	}
	if os.Geteuid() == 0 {
		ns := lab.NewNetns(t)
		lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-f", script)
		if got := tables(t, ns); got != "table inet egress" {
			t.Errorf("tables after nft -f:\n%s", got)
		}
	}
}

// TestStagedEnforceIsGuarded: staged enforcement drops for its users, so
// it meets the same check as enforce mode: an empty baseline is refused
// both ways unless --force, and nothing reaches the kernel.
func TestStagedEnforceIsGuarded(t *testing.T) {
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	empty := storeWith(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644)
	env := []string{"EGRESS_DB=" + empty, "EGRESS_NETNS=" + ns.Name, "EGRESS_RESOLV_CONF=" + resolv}
	for _, stage := range [][]string{{"--enforce-users", "root"}, {"--audit-users", "root"}} {
		mustFail(t, enforceBin, env, []string{"refusing to enforce", "no flows", "staged enforcement", "--force"},
			append([]string{"apply", "--mode", "enforce"}, stage...)...)
		if got := tables(t, ns); got != "" {
			t.Fatalf("%v: refused, yet the namespace has:\n%s", stage, got)
		}
	}
	// Flows, but no DNS server: cut off DNS.
	withFlows := storeWith(t, tcpFlow(0, "192.0.2.1", 443))
	mustFail(t, enforceBin, []string{"EGRESS_DB=" + withFlows, "EGRESS_NETNS=" + ns.Name, "EGRESS_RESOLV_CONF=" + filepath.Join(t.TempDir(), "none")},
		[]string{"refusing to enforce", "cut off DNS"}, "apply", "--mode", "enforce", "--enforce-users", "root")
	mustRun(t, enforceBin, env, "apply", "--mode", "enforce", "--enforce-users", "root", "--force")
	if got := tables(t, ns); got != "table inet egress" {
		t.Errorf("--force applied nothing:\n%s", got)
	}
}

// TestReconcileApplyIsGuarded: reconcile --apply takes the same check as
// apply (and --force), and --rollback-if-denied-rate needs
// --confirm-within there too.
func TestReconcileApplyIsGuarded(t *testing.T) {
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	db := storeWith(t, tcpFlow(65534, "192.0.2.1", 443))
	env := []string{"EGRESS_DB=" + db, "EGRESS_NETNS=" + ns.Name, "EGRESS_RESOLV_CONF=" + filepath.Join(t.TempDir(), "none")}
	mustFail(t, enforceBin, env, []string{"refusing to enforce", "cut off DNS", "--force"},
		"reconcile", "--apply", "--mode", "enforce", "--enforce-users", "nobody")
	if got := tables(t, ns); got != "" {
		t.Fatalf("refused, yet the namespace has:\n%s", got)
	}
	mustFail(t, enforceBin, env, []string{"--rollback-if-denied-rate needs --confirm-within"},
		"reconcile", "--apply", "--mode", "enforce", "--enforce-users", "nobody", "--force", "--rollback-if-denied-rate", "5/s")
	if got := tables(t, ns); got != "" {
		t.Fatalf("refused, yet the namespace has:\n%s", got)
	}
	out := mustRun(t, enforceBin, env, "reconcile", "--apply", "--mode", "enforce", "--enforce-users", "nobody", "--force")
	if !strings.Contains(out, "applied generation 1") || tables(t, ns) != "table inet egress" {
		t.Errorf("reconcile --apply --force: %s", out)
	}
}

// dnsJSON is the part of the commands' JSON that says where the DNS
// servers came from.
type dnsJSON struct {
	ResolvConf string       `json:"resolv_conf"`
	Servers    []netip.Addr `json:"dns_servers"`
}

// TestNetnsResolvConf: with --netns NAME, the DNS servers (and the
// follower's trusted resolvers) come from /etc/netns/NAME/resolv.conf, the
// file processes of that namespace use, and every command says so; a
// configured resolv_conf still wins.
func TestNetnsResolvConf(t *testing.T) {
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	ns.SetResolver(t, "192.0.2.77")
	own := "/etc/netns/" + ns.Name + "/resolv.conf"
	db := storeWith(t, tcpFlow(65534, "192.0.2.1", 443))
	env := []string{"EGRESS_DB=" + db}

	var applied dnsJSON
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "apply", "--netns", ns.Name, "--mode", "audit", "--json")), &applied); err != nil {
		t.Fatal(err)
	}
	if applied.ResolvConf != own || len(applied.Servers) != 1 || applied.Servers[0] != netip.MustParseAddr("192.0.2.77") {
		t.Errorf("apply --json: %+v", applied)
	}
	if l := lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "list", "table", "inet", "egress"); !strings.Contains(l, "ip daddr 192.0.2.77 udp dport 53") {
		t.Errorf("the applied table does not allow the namespace's resolver:\n%s", l)
	}
	var plan struct {
		dnsJSON
		Rules []struct{ Text string } `json:"rules"`
	}
	out, stderr, err := run(enforceBin, env, "generate", "--netns", ns.Name, "--json")
	if err != nil || json.Unmarshal([]byte(out), &plan) != nil {
		t.Fatalf("generate --netns: %v\n%s%s", err, out, stderr)
	}
	if plan.ResolvConf != own || !strings.Contains(stderr, "resolv_conf="+own) || !strings.Contains(out, "192.0.2.77") {
		t.Errorf("generate --netns: resolv_conf %q, stderr:\n%s", plan.ResolvConf, stderr)
	}
	if script := mustRun(t, enforceBin, env, "generate", "--netns", ns.Name); !strings.Contains(script, "# DNS servers from "+own) {
		t.Errorf("the script does not say where the DNS servers came from:\n%s", script)
	}

	for _, args := range [][]string{{"diff", "--json"}, {"status", "--json"}, {"apply", "--dry-run", "--json"}} {
		var d dnsJSON
		if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, append(args, "--netns", ns.Name)...)), &d); err != nil || d.ResolvConf != own {
			t.Errorf("%v: %+v %v", args, d, err)
		}
	}
	if human := mustRun(t, enforceBin, env, "status", "--netns", ns.Name); !strings.Contains(human, "192.0.2.77 (from "+own+")") {
		t.Errorf("status:\n%s", human)
	}

	// The follower trusts the namespace's resolver.
	cg := lab.NewCgroup(t)
	cmd := exec.Command(enforceBin, "follow", "--cgroup", cg.Path, "--netns", ns.Name, "--pin-dir", lab.NewBPFFS(t))
	cmd.Env = append(os.Environ(), env...)
	errBuf := &lab.Buffer{}
	cmd.Stderr = errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	lab.WaitFor(t, func() bool {
		select {
		case <-exited:
			return true
		default:
			return strings.Contains(errBuf.String(), "msg=following")
		}
	})
	if s := errBuf.String(); !strings.Contains(s, "resolvers=[192.0.2.77]") || !strings.Contains(s, "resolv_conf="+own) {
		t.Errorf("follow --netns:\n%s", s)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)

	// A configured resolv_conf wins; a namespace without its own reads the host's.
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 192.0.2.88\n"), 0o644)
	if out := mustRun(t, enforceBin, append(env, "EGRESS_RESOLV_CONF="+conf), "generate", "--netns", ns.Name, "--json"); !strings.Contains(out, "192.0.2.88") || strings.Contains(out, "192.0.2.77") {
		t.Errorf("a configured resolv_conf did not win:\n%s", out)
	}
	other := lab.NewNetns(t)
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "generate", "--netns", other.Name, "--json")), &plan); err != nil || plan.ResolvConf != "/etc/resolv.conf" {
		t.Errorf("a namespace without its own resolv.conf: %q %v", plan.ResolvConf, err)
	}
}

// TestKnockingDoesNotSeedTheNextGeneration: a user knocks once on a
// destination the table denies; the monitor records it; reconcile lists it
// apart and --apply leaves it out, unless --include-denied.
func TestKnockingDoesNotSeedTheNextGeneration(t *testing.T) {
	l := newRolloutLab(t)
	w := startWatch(t, l)
	l.run(t, "apply", "--mode", "enforce")
	if !cannotReach(l.nobody, 8081) {
		t.Fatal("an unlearned destination went through")
	}
	w.waitEntries(t, func(es []monitor.LogEntry) bool { return hasEntry(es, "drop", 65534, 8081) })
	w.stop(t) // flushes the observations

	var p struct {
		Additions []struct{ Port uint16 } `json:"additions"`
		Denied    []struct{ Port uint16 } `json:"denied"`
	}
	if err := json.Unmarshal([]byte(l.run(t, "reconcile", "--json", "--min-hits", "1")), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Additions) != 0 || len(p.Denied) != 1 || p.Denied[0].Port != 8081 {
		t.Errorf("proposal: additions %+v, denied %+v", p.Additions, p.Denied)
	}
	_, stderr, err := run(enforceBin, l.env, "reconcile", "--apply", "--mode", "enforce", "--min-hits", "1")
	if err != nil {
		t.Fatalf("reconcile --apply: %v\n%s", err, stderr)
	}
	if !cannotReach(l.nobody, 8081) {
		t.Fatal("a knock seeded the next generation: the denied destination now goes through")
	}
	out := l.run(t, "reconcile", "--apply", "--include-denied", "--mode", "enforce", "--min-hits", "1")
	if !strings.Contains(out, "1 added") || !reaches(l.nobody, 8081) {
		t.Errorf("--include-denied did not add the destination: %s", out)
	}
}
