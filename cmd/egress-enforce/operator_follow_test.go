package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
)

// followStatus is what the tests read of status --json about the
// follower.
type followStatus struct {
	FollowMarkAccepted *counter `json:"follow_mark_accepted"`
	Follow             *struct {
		Added     uint64   `json:"elements_added"`
		Marked    uint64   `json:"connects_marked"`
		MarkRules *counter `json:"mark_rules_accepted"`
	} `json:"follow"`
	Follower struct {
		Running bool   `json:"running"`
		Store   string `json:"store"`
		Note    string `json:"note"`
	} `json:"follower"`
}

func followStatusOf(t *testing.T, env []string) (followStatus, string) {
	t.Helper()
	var s followStatus
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "status", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	return s, mustRun(t, enforceBin, env, "status")
}

// TestStatusShowsTheFollower (items 2, 6 and 7):
//   - status without the follower's store dropped the follower's section
//     silently: now it says where the counters would come from;
//   - its counters lagged the follower's own output by seconds: now the
//     follower saves them before it prints what it added;
//   - it reported "8 connects let through by the mark before their element
//     was in" while the mark rules' counter was 0 (the learned set
//     accepted them first): now it shows the connects it marked and, from
//     the kernel, what the mark rules accepted;
//   - follow stopped on SIGINT without a summary: now it logs one.
//
// web.lab answers the address nobody learned for tcp/8080: the follower
// marks the connect, and the learned set accepts it.
func TestStatusShowsTheFollower(t *testing.T) {
	lab.Require(t, "nft", "curl", "dnsmasq")
	l := newRolloutLab(t)
	cg := lab.NewCgroup(t)
	lab.StartDNS(t, l.pair.Server, []string{lab.ServerIP4}, lab.DNSRecord{Name: "web.lab", IPs: []string{lab.ServerIP4}})
	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, []byte("follow_names:\n  - {name: web.lab, user: nobody, proto: tcp, port: 8080}\nfollow_ttl_floor: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.env = append(l.env, "EGRESS_CONFIG="+conf)
	nobody := lab.As{UID: 65534, GID: 65534, Netns: l.pair.Client, Cgroup: cg}
	l.run(t, "apply", "--mode", "enforce")

	missing := filepath.Join(t.TempDir(), "elsewhere.db")
	s, text := followStatusOf(t, append(l.env, "EGRESS_DB="+missing))
	if s.Follower.Running || s.Follower.Store != missing || !strings.Contains(s.Follower.Note, "no store at "+missing) ||
		!strings.Contains(text, "follower: not running (set follow_gate is empty") || !strings.Contains(text, "pass that one with --db") {
		t.Errorf("status without the follower's store: %+v\n%s", s.Follower, text)
	}

	cmd, stdout, stderr, _ := startFollow(t, l, cg)
	lab.Await(t, "the follower to attach", func() bool { return strings.Contains(stderr.String(), "msg=following") })
	if err := reach(nobody, "http://web.lab:8080/"); err != nil {
		t.Fatalf("the learned and followed destination: %v", err)
	}
	lab.Await(t, "the follower to print web.lab", func() bool { return strings.Contains(stdout.String(), "web.lab") })
	// Printed, so saved: status is not behind the follower's output.
	s, text = followStatusOf(t, l.env)
	if s.Follow == nil || s.Follow.Added != 1 || !s.Follower.Running || !strings.Contains(text, "follower: running") {
		t.Errorf("status once the follower printed its element: %+v %+v\n%s", s.Follow, s.Follower, text)
	}

	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("follow after SIGINT: %v", err)
	}
	if log := stderr.String(); !strings.Contains(log, `msg="following stopped"`) || !strings.Contains(log, "addresses_added=1 ") ||
		!strings.Contains(log, "connects_marked=1 ") || !strings.Contains(log, "mark_rules_accepted_packets=0 ") {
		t.Errorf("no summary of what the follower did:\n%s", log)
	}
	s, text = followStatusOf(t, l.env)
	if s.FollowMarkAccepted == nil || s.FollowMarkAccepted.Packets != 0 || s.Follow == nil || s.Follow.Marked != 1 ||
		s.Follow.MarkRules == nil || *s.Follow.MarkRules != *s.FollowMarkAccepted {
		t.Errorf("the mark: kernel %+v, follower %+v", s.FollowMarkAccepted, s.Follow)
	}
	for _, w := range []string{"follower: not running", "the counters the follower saved last", "1 connects marked", "0 packets accepted by the mark rules"} {
		if !strings.Contains(text, w) {
			t.Errorf("status lacks %q:\n%s", w, text)
		}
	}
}

// TestWatchSummarizesOnStop (item 7): watch stopped on SIGINT without a
// word; now it logs what it saw, as the learner does.
func TestWatchSummarizesOnStop(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "enforce")
	w := startWatch(t, l)
	sendUDP(t, l.other, 9998, 4)
	w.waitEntries(t, func(es []monitor.LogEntry) bool { return len(es) == 4 })
	_ = w.cmd.Process.Signal(syscall.SIGINT)
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v", err)
	}
	for _, want := range []string{`msg="watching stopped"`, "logged_packets=4 ", "logged_dropped=4 ", "logged_audited=0 ", "not_written_to_store=0 "} {
		if !strings.Contains(w.stderr.String(), want) {
			t.Errorf("watch's summary lacks %q:\n%s", want, w.stderr.String())
		}
	}
}
