package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
)

var enforceBin, learnBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "egress-enforce-test")
	if err != nil {
		panic(err)
	}
	enforceBin = filepath.Join(dir, "egress-enforce")
	learnBin = filepath.Join(dir, "egress-learn")
	for bin, pkg := range map[string]string{enforceBin: ".", learnBin: "../egress-learn"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			os.Stderr.Write(out)
			panic(err)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(bin string, env []string, args ...string) (string, string, error) {
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EGRESS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

func mustRun(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	out, stderr, err := run(bin, env, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s%s", filepath.Base(bin), args, err, out, stderr)
	}
	return out
}

func mustFail(t *testing.T, bin string, env []string, want []string, args ...string) string {
	t.Helper()
	_, stderr, err := run(bin, env, args...)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("%v: err = %v, want exit status 1\n%s", args, err, stderr)
	}
	lab.WantAll(t, fmt.Sprintf("%v: stderr", args), stderr, want...)
	if strings.Contains(stderr, "goroutine ") {
		t.Errorf("stack trace:\n%s", stderr)
	}
	return stderr
}

// reach fetches url as a. The time limit is generous: an allowed flow
// answers at once, and a slow machine must not fail it.
func reach(a lab.As, url string, extra ...string) error {
	_, err := a.Run(append([]string{"curl", "-sS", "--max-time", "30", url}, extra...)...)
	return err
}

// blocked runs curl to url as a, a flow the table in a's namespace should
// drop, until its default drop counter shows the SYN and the SYN sent
// again, which only happens when no answer came (see lab.As.Blocked). curl
// has no time limit of its own.
func blocked(t *testing.T, a lab.As, url string, extra ...string) error {
	t.Helper()
	target := nft.Target{Netns: a.Netns.Name}
	dropped := func() uint64 {
		st, err := nft.Open(target).Status(plan.DefaultTable, false)
		if err != nil || st.Default == nil {
			t.Fatalf("read the default drop counter: %+v, %v", st, err)
		}
		return st.Default.Packets
	}
	before := dropped()
	return a.Blocked(func() bool { return dropped() >= before+2 }, append([]string{"curl", "-sS", url}, extra...)...)
}

// stopLearner stops a learner with SIGINT: it then writes what it saw
// before it exits 0, so no wait for a periodic flush is needed.
// start starts bin with args and env added to this process's; it is
// killed when the test ends, unless it was waited for, and its stderr is
// logged when the test failed.
func start(t *testing.T, env []string, bin string, args ...string) (cmd *exec.Cmd, stdout, stderr *lab.Buffer) {
	t.Helper()
	cmd = exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, stderr = &lab.Buffer{}, &lab.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(bin), stderr.String())
		}
	})
	return cmd, stdout, stderr
}

// startLearner runs "egress-learn run" with args and env until it says
// it learns; it is killed when the test ends, unless stopLearner stopped
// it.
func startLearner(t *testing.T, env []string, args ...string) (*exec.Cmd, *lab.Buffer) {
	t.Helper()
	learner, _, lerr := start(t, env, learnBin, append([]string{"run"}, args...)...)
	lab.Await(t, "the learner to attach", func() bool { return strings.Contains(lerr.String(), "msg=learning") })
	return learner, lerr
}

func stopLearner(t *testing.T, learner *exec.Cmd, stderr *lab.Buffer) {
	t.Helper()
	_ = learner.Process.Signal(os.Interrupt)
	if err := learner.Wait(); err != nil {
		t.Fatalf("learner: %v\n%s", err, stderr.String())
	}
}

// TestLearnThenEnforce is the whole product on a lab: learn what two
// users do with real clients, generate and review the table, apply it in
// enforce mode in the client namespace, and check that learned flows pass,
// everything else is dropped and counted, and DNS keeps working.
func TestLearnThenEnforce(t *testing.T) {
	lab.Require(t, "nft", "curl", "dig", "dnsmasq")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4},
		lab.DNSRecord{Name: "web.lab", IPs: []string{lab.ServerIP4, lab.ServerIP6}},
		lab.DNSRecord{Name: "www.lab", Target: "web.lab"})
	dir := t.TempDir()
	db := filepath.Join(dir, "baseline.db")
	conf := filepath.Join(dir, "config.yaml")
	resolv := "/etc/netns/" + pair.Client.Name + "/resolv.conf"
	if err := os.WriteFile(conf, []byte("db: "+db+"\nresolv_conf: "+resolv+"\nnetns: "+pair.Client.Name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"EGRESS_CONFIG=" + conf}
	nobody := lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg}
	other := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}

	learnTwoUsers(t, env, cg, nobody, other)
	reviewScript(t, env, dir)
	auditThenEnforce(t, env)
	checkEnforced(t, env, nobody, other)
	var d plan.Diff
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "diff", "--mode", "enforce", "--json")), &d); err != nil || !d.Empty() {
		t.Errorf("diff after apply: %+v %v", d, err)
	}
	if out := mustRun(t, enforceBin, env, "remove"); !strings.Contains(out, "removed table inet egress") {
		t.Errorf("remove: %s", out)
	}
	if out := mustRun(t, enforceBin, env, "remove"); !strings.Contains(out, "nothing to remove") {
		t.Errorf("second remove: %s", out)
	}
}

// learnTwoUsers learns what nobody and uid 4242 do with curl.
func learnTwoUsers(t *testing.T, env []string, cg *lab.Cgroup, nobody, other lab.As) {
	learner, lerr := startLearner(t, env, "--cgroup", cg.Path, "--flush-interval", "200ms")
	nobody.MustRun(t, "curl", "-sS", "-4", "http://www.lab:8080/")
	nobody.MustRun(t, "curl", "-sS", "-6", "http://www.lab:8080/")
	other.MustRun(t, "curl", "-sS", "-4", "http://web.lab:8081/")
	stopLearner(t, learner, lerr)

}

// reviewScript: the script nft accepts, and the comments say why.
func reviewScript(t *testing.T, env []string, dir string) {
	script := mustRun(t, enforceBin, env, "generate", "--mode", "enforce")
	lab.WantAll(t, "generated script", script, "65534 . 10.77.0.1 . tcp . 8080", "65534 . fd77::1 . tcp . 8080", "4242 . 10.77.0.1 . tcp . 8081", "www.lab", "policy drop")
	file := filepath.Join(dir, "egress.nft")
	mustRun(t, enforceBin, env, "generate", "--mode", "enforce", "-o", file)
	scratch := lab.NewNetns(t)
	lab.MustRun(t, "ip", "netns", "exec", scratch.Name, "nft", "-c", "-f", file)
	var generated plan.Plan
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "generate", "--json")), &generated); err != nil {
		t.Fatalf("generate --json: %v", err)
	}
	if generated.Mode != plan.ModeAudit || generated.Flows < 4 {
		t.Errorf("plan: mode %s, %d flows", generated.Mode, generated.Flows)
	}

}

// auditThenEnforce applies in audit mode, diffs and dry-runs enforce
// mode, and applies it.
func auditThenEnforce(t *testing.T, env []string) {
	if out := mustRun(t, enforceBin, env, "diff"); !strings.Contains(out, "not installed") {
		t.Errorf("diff before apply:\n%s", out)
	}
	mustRun(t, enforceBin, env, "apply", "--mode", "audit")
	if out := mustRun(t, enforceBin, env, "diff", "--mode", "enforce"); !strings.Contains(out, "mode: audit -> enforce") {
		t.Errorf("diff to enforce:\n%s", out)
	}
	dry := mustRun(t, enforceBin, env, "apply", "--mode", "enforce", "--dry-run")
	if !strings.Contains(dry, "dry run") {
		t.Errorf("dry run:\n%s", dry)
	}
	var st nft.Status
	_ = json.Unmarshal([]byte(mustRun(t, enforceBin, env, "status", "--json")), &st)
	if st.Mode != plan.ModeAudit {
		t.Errorf("a dry run changed the mode to %s", st.Mode)
	}
	out := mustRun(t, enforceBin, env, "apply", "--mode", "enforce")
	if !strings.Contains(out, "verified") {
		t.Errorf("apply: %s", out)
	}

}

// checkEnforced: learned flows pass, names resolve; the rest is dropped
// and counted.
func checkEnforced(t *testing.T, env []string, nobody, other lab.As) {
	var st status
	noCG := func(a lab.As) lab.As { a.Cgroup = nil; return a }
	if err := reach(noCG(nobody), "http://www.lab:8080/", "-4"); err != nil {
		t.Errorf("learned flow blocked: %v", err)
	}
	if err := reach(noCG(nobody), "http://www.lab:8080/", "-6"); err != nil {
		t.Errorf("learned ipv6 flow blocked: %v", err)
	}
	if err := reach(noCG(other), "http://web.lab:8081/"); err != nil {
		t.Errorf("uid 4242's learned flow blocked: %v", err)
	}
	if err := blocked(t, noCG(other), "http://www.lab:8080/", "-4"); err != nil {
		t.Errorf("uid 4242 to nobody's destination: %v", err)
	}
	if err := blocked(t, noCG(nobody), "http://web.lab:8081/"); err != nil {
		t.Errorf("nobody to uid 4242's destination: %v", err)
	}
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	// Two blocked attempts, each seen dropped twice (SYN and retry).
	if st.Mode != plan.ModeEnforce || st.Policy != "drop" || st.Default == nil || st.Default.Packets < 4 {
		t.Errorf("status after enforce: %+v", st)
	}
	human := mustRun(t, enforceBin, env, "status")
	lab.WantAll(t, "status", human, "enforce mode", "set allow4", "dropped")
}

// TestGuards: enforce mode refuses a missing, empty or DNS-cutting
// baseline unless --force; audit mode and --force go through.
func TestGuards(t *testing.T) {
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	cg := lab.NewCgroup(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	mustRun(t, learnBin, nil, "run", "--cgroup", cg.Path, "--db", empty, "--duration", "100ms")
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644)
	local := filepath.Join(dir, "resolv-local.conf")
	os.WriteFile(local, []byte("nameserver 127.0.0.53\n"), 0o644)
	base := []string{"apply", "--netns", ns.Name}
	env := []string{"EGRESS_RESOLV_CONF=" + resolv}

	mustFail(t, enforceBin, env, []string{"refusing to enforce", "cannot be read", "--force"},
		append(base, "--mode", "enforce", "--db", filepath.Join(dir, "missing.db"))...)
	mustFail(t, enforceBin, env, []string{"refusing to enforce", "no flows"}, append(base, "--mode", "enforce", "--db", empty)...)
	mustRun(t, enforceBin, env, append(base, "--mode", "audit", "--db", empty)...)
	mustRun(t, enforceBin, env, append(base, "--mode", "enforce", "--db", empty, "--force")...)

	// A baseline with flows, but DNS through a local resolver whose
	// upstream was never seen.
	pair := lab.NewPair(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	withFlows := filepath.Join(dir, "flows.db")
	learner, lerr := startLearner(t, nil, "--cgroup", cg.Path, "--db", withFlows, "--flush-interval", "100ms")
	lab.As{UID: 1, GID: 1, Netns: pair.Client, Cgroup: cg}.MustRun(t, "curl", "-sS", "http://10.77.0.1:8080/")
	stopLearner(t, learner, lerr)
	mustFail(t, enforceBin, []string{"EGRESS_RESOLV_CONF=" + local}, []string{"local resolver", "127.0.0.53", "cut off DNS"},
		append(base, "--mode", "enforce", "--db", withFlows)...)
	mustFail(t, enforceBin, []string{"EGRESS_RESOLV_CONF=" + filepath.Join(dir, "none")}, []string{"no DNS server"},
		append(base, "--mode", "enforce", "--db", withFlows)...)
	mustRun(t, enforceBin, env, append(base, "--mode", "enforce", "--db", withFlows)...)
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "c.yaml")
	os.WriteFile(conf, []byte("always_allow:\n  - proto: tcp\n    dest: 10.0.0.0/8\n    prot: 443\n"), 0o600)
	conf2 := filepath.Join(dir, "c2.yaml")
	os.WriteFile(conf2, []byte("always_allow:\n  - proto: icmp\n    port: 443\n"), 0o600)
	conf3 := filepath.Join(dir, "c3.yaml")
	os.WriteFile(conf3, []byte("table: \"bad name\"\n"), 0o600)
	db := filepath.Join(dir, "missing.db")
	mustFail(t, enforceBin, nil, []string{"mode", "sometimes"}, "generate", "--db", db, "--mode", "sometimes")
	mustFail(t, enforceBin, nil, []string{"prot"}, "generate", "--db", db, "--config", conf)
	mustFail(t, enforceBin, nil, []string{"always_allow #1", "port needs proto tcp or udp"}, "generate", "--db", db, "--config", conf2)
	mustFail(t, enforceBin, nil, []string{"table", "bad name"}, "status", "--config", conf3)
	mustFail(t, enforceBin, nil, []string{db, "does not exist"}, "generate", "--db", db)
	mustFail(t, enforceBin, nil, []string{"since", "soon"}, "generate", "--db", db, "--since", "soon")
	if os.Geteuid() == 0 {
		mustFail(t, enforceBin, nil, []string{"/run/netns/no-such-ns"}, "status", "--netns", "no-such-ns")
		mustFail(t, enforceBin, nil, []string{"not a network namespace"}, "status", "--netns", "/etc/hostname")
	}
	for _, args := range [][]string{{"--help"}, {"apply", "--help"}, {"generate", "--help"}, {"status", "--help"}, {"diff", "--help"}, {"remove", "--help"}} {
		out := mustRun(t, enforceBin, nil, args...)
		if !strings.Contains(out, "Usage:") || !strings.Contains(out, "--config") {
			t.Errorf("%v: help:\n%s", args, out)
		}
	}
	if out := mustRun(t, enforceBin, nil, "apply", "--help"); !strings.Contains(out, "--netns") || !strings.Contains(out, "--force") || !strings.Contains(out, "one netlink transaction") {
		t.Errorf("apply --help:\n%s", out)
	}
}
