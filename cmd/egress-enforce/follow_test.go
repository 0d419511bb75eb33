package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
)

// TestFollowCommand: "egress-enforce follow" on a child cgroup lets nobody
// reach a name a configured rule allows at an address it never learned,
// prints the element, exports metrics, and leaves counters for status.
func TestFollowCommand(t *testing.T) {
	lab.Require(t, "nft", "curl", "dnsmasq")
	l := newRolloutLab(t)
	cg := lab.NewCgroup(t)
	lab.MustRun(t, "ip", "-n", l.pair.Server.Name, "addr", "add", "10.77.0.5/24", "dev", "veth0")
	lab.MustRun(t, "ip", "-n", l.pair.Server.Name, "addr", "add", "fd77::5/64", "dev", "veth0", "nodad")
	lab.StartDNS(t, l.pair.Server, []string{lab.ServerIP4}, lab.DNSRecord{Name: "alt.lab", IPs: []string{"10.77.0.5"}},
		lab.DNSRecord{Name: "alt6.lab", IPs: []string{"fd77::5"}})
	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, []byte("follow_names:\n  - {name: alt.lab, user: nobody, proto: tcp, port: 8080}\n  - {name: alt6.lab, user: nobody, proto: tcp, port: 8080}\nfollow_ttl_floor: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.env = append(l.env, "EGRESS_CONFIG="+conf)
	nobody := lab.As{UID: 65534, GID: 65534, Netns: l.pair.Client, Cgroup: cg}
	if err := reach(nobody, "http://alt.lab:8080/"); err != nil {
		t.Fatalf("before enforcement: %v", err)
	}
	out := l.run(t, "apply", "--mode", "enforce")
	if !strings.Contains(out, "applied generation 1") {
		t.Fatal(out)
	}
	if gen := l.run(t, "generate", "--mode", "enforce"); !strings.Contains(gen, "uid 65534 tcp/8080 alt.lab (configuration)") || !strings.Contains(gen, "set follow4") {
		t.Errorf("generate does not show the name rule and its set:\n%s", gen)
	}
	if err := blocked(t, nobody, "http://alt.lab:8080/"); err != nil {
		t.Fatalf("alt.lab without the follower: %v", err)
	}

	cmd, stdout, stderr, addr := startFollow(t, l, cg)
	// "following" is logged once the programs are attached.
	lab.Await(t, "the follower to attach", func() bool { return strings.Contains(stderr.String(), "msg=following") })
	if err := reach(nobody, "http://alt.lab:8080/"); err != nil {
		t.Errorf("the followed name is not reachable: %v", err)
	}
	if err := reach(nobody, "http://alt6.lab:8080/", "-6"); err != nil {
		t.Errorf("the followed IPv6 name is not reachable: %v", err)
	}
	if err := blocked(t, nobody, "http://[fd77::1]:8080/", "-6"); err != nil {
		t.Errorf("an IPv6 address no answer gave: %v", err)
	}
	lab.Await(t, "the follower to print alt.lab", func() bool { return strings.Contains(stdout.String(), "alt.lab") })
	var e follow.Address
	if err := json.Unmarshal([]byte(strings.SplitN(stdout.String(), "\n", 2)[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e.UID != 65534 || e.Name != "alt.lab" || e.IP.String() != "10.77.0.5" || e.Port != 8080 || e.Timeout != time.Minute {
		t.Errorf("element %+v", e)
	}
	lab.Await(t, "the follower to print fd77::5", func() bool { return strings.Contains(stdout.String(), "fd77::5") })
	if set := lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "list", "set", "inet", "egress", "follow6"); !strings.Contains(set, "65534 . fd77::5 . tcp . 8080") {
		t.Errorf("set follow6:\n%s", set)
	}
	fams := lab.Scrape(t, "http://"+addr+"/metrics")
	if v, _ := lab.MetricValue(fams, "egress_follow_answers_total", map[string]string{"outcome": "used"}); v < 1 {
		t.Errorf("answers used: %v", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_follow_elements_total", map[string]string{"result": "added"}); v < 1 {
		t.Errorf("elements added: %v", v)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("follow after SIGINT: %v", err)
	}
	st := l.status(t)
	if st.Follow == nil || st.Follow.Accepted < 2 || st.Follow.Rules != 2 || st.Follow.Added != 2 {
		t.Errorf("status follower counters: %+v", st.Follow)
	}
	if human := l.run(t, "status"); !strings.Contains(human, "counters saved at") || !strings.Contains(human, "answers ignored:") || !strings.Contains(human, "the mark check dropped") {
		t.Errorf("status:\n%s", human)
	}
	mustFail(t, enforceBin, append(l.env, "EGRESS_FOLLOW_MODE=sometimes"), []string{"follow_mode"}, "generate")
}

// startFollow starts "egress-enforce follow" on cg, with its metrics on a
// free port; it is killed when the test ends.
func startFollow(t *testing.T, l *rolloutLab, cg *lab.Cgroup) (cmd *exec.Cmd, stdout, stderr *lab.Buffer, addr string) {
	addr = lab.FreeAddr(t)
	cmd, stdout, stderr = start(t, l.env, enforceBin, "follow", "--cgroup", cg.Path, "--json", "--metrics-addr", addr, "--pin-dir", lab.NewBPFFS(t))
	return cmd, stdout, stderr, addr
}
