package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
)

// The operator's view (issue 11): every line the tools print is true. The
// tests read what an operator reads, text and JSON, after real traffic.
// They decode JSON into types of their own, so that they compile against
// older code too, and fail there.

// sendUDP sends n datagrams to the server's port as a, one socket each.
func sendUDP(t *testing.T, a lab.As, port, n int) {
	t.Helper()
	_, _ = a.Run("bash", "-c", fmt.Sprintf("for i in $(seq %d); do echo x > /dev/udp/%s/%d; done", n, lab.ServerIP4, port))
}

// defaultCounters is what the tests read of status --json.
type defaultCounters struct {
	Mode         string   `json:"mode"`
	Dropped      counter  `json:"dropped"`
	Audited      counter  `json:"audited"`
	DropsLogged  *counter `json:"drops_logged"`
	AuditsLogged *counter `json:"audits_logged"`
}

type counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func (l *rolloutLab) counters(t *testing.T) defaultCounters {
	t.Helper()
	var c defaultCounters
	if err := json.Unmarshal([]byte(l.run(t, "status", "--json")), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStatusSaysWhatTheDefaultRulesDid (item 1): in enforce mode, status
// said "29 packets dropped (1740 bytes), 0 logged, not blocked (audit)",
// although all 29 drops were logged: the "logged" figure counted audited
// packets. Now each mode's line says what its rules did, and how many of
// those packets reached the log; the figures are status --json's.
func TestStatusSaysWhatTheDefaultRulesDid(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "enforce")
	sendUDP(t, l.other, 9998, 4)
	lab.WaitFor(t, func() bool { c := l.counters(t); return c.DropsLogged != nil && c.DropsLogged.Packets == 4 })
	c := l.counters(t)
	text := l.run(t, "status")
	want := fmt.Sprintf("dropped by the default rules (no allow rule matched): 4 packets (%d bytes), all 4 logged (NFLOG group 88)", c.Dropped.Bytes)
	if c.Dropped.Packets != 4 || !strings.Contains(text, want) {
		t.Errorf("enforce: status --json %+v; status lacks %q:\n%s", c, want, text)
	}
	if strings.Contains(text, "audit") {
		t.Errorf("enforce mode, but status speaks of audit:\n%s", text)
	}

	l.run(t, "apply", "--mode", "audit")
	sendUDP(t, l.other, 9998, 3)
	lab.WaitFor(t, func() bool { c := l.counters(t); return c.AuditsLogged != nil && c.AuditsLogged.Packets == 3 })
	c, text = l.counters(t), l.run(t, "status")
	want = fmt.Sprintf("audited by the default rules (no allow rule matched; logged, not blocked): 3 packets (%d bytes), all 3 logged (NFLOG group 88)", c.Audited.Bytes)
	if !strings.Contains(text, want) || strings.Contains(text, "dropped by") {
		t.Errorf("audit: status lacks %q:\n%s", want, text)
	}

	// Over the log's limit, the line splits the packets into logged and
	// not logged, as the kernel's two counters do.
	l.env = append(l.env, "EGRESS_DROP_LOG_RATE=1")
	l.run(t, "apply", "--mode", "enforce")
	sendUDP(t, l.other, 9998, 20)
	lab.WaitFor(t, func() bool { return l.counters(t).Dropped.Packets == 20 })
	c, text = l.counters(t), l.run(t, "status")
	logged := c.DropsLogged.Packets
	want = fmt.Sprintf("20 packets (%d bytes), %d logged (NFLOG group 88), %d not logged: over drop_log_rate (1/s)", c.Dropped.Bytes, logged, 20-logged)
	if logged == 0 || logged >= 20 || !strings.Contains(text, want) {
		t.Errorf("rate-limited drops: %+v; status lacks %q:\n%s", c, want, text)
	}
}

// TestDeniedNamesEachUsersOwnNames (item 3): three users were denied the
// same address, which answered for three names. denied listed every name
// of the address, once per denied destination of it
// ("deb.debian.org,proxy.golang.org,registry.npmjs.org,deb.debian.org,...").
// Now each destination carries the names the learner would give its user:
// its own lookups, else a trusted resolver's (root here), never another
// user's; each name once.
func TestDeniedNamesEachUsersOwnNames(t *testing.T) {
	db := filepath.Join(t.TempDir(), "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("151.101.2.132")
	now := time.Now().UTC()
	lookup := func(uid uint32, name string) store.DNSObservation {
		return store.DNSObservation{IP: ip, Names: []string{name}, TTL: 60, UID: uid, Seen: now}
	}
	if err := st.Apply(&store.Batch{DNS: []store.DNSObservation{
		lookup(4100, "registry.npmjs.org"), lookup(4100, "registry.npmjs.org"), lookup(4200, "deb.debian.org"), lookup(0, "proxy.golang.org"),
	}}); err != nil {
		t.Fatal(err)
	}
	var obs []store.Observation
	for _, uid := range []uint32{4100, 4200, 4300} {
		obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: uid, Proto: 6, IP: ip, Port: 443},
			Hits: 2, FirstSeen: now, LastSeen: now})
	}
	if _, err := st.RecordObservations(&store.ObservationBatch{Observations: obs}); err != nil {
		t.Fatal(err)
	}
	env := []string{"EGRESS_DB=" + db, "EGRESS_DNS_RESOLVER_USERS=0"}
	var sum struct {
		Destinations []struct {
			UID       uint32   `json:"uid"`
			Hostnames []string `json:"hostnames"`
		} `json:"destinations"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "denied", "--json")), &sum); err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{4100: "registry.npmjs.org", 4200: "deb.debian.org", 4300: "proxy.golang.org"}
	for _, d := range sum.Destinations {
		if !slices.Equal(d.Hostnames, []string{want[d.UID]}) {
			t.Errorf("denied --json: uid %d has names %q, want [%s]", d.UID, d.Hostnames, want[d.UID])
		}
	}
	text := mustRun(t, enforceBin, env, "denied")
	if !strings.Contains(text, "no apply to compare the rate with: no generation of table inet egress in this host's network namespace") {
		t.Errorf("denied does not say why it has no rate around an apply:\n%s", text)
	}
	for uid, name := range want {
		line := regexp.MustCompile(fmt.Sprintf(`(?m)^  %d\s+tcp/443 %s\s+(\S+)\s`, uid, regexp.QuoteMeta(ip.String()))).FindStringSubmatch(text)
		if line == nil || line[1] != name {
			t.Errorf("denied: uid %d's line names %q, want %q:\n%s", uid, line, name, text)
		}
	}
}

// TestReconcileSaysWhichTarget (item 4): reconcile without --netns said
// "reconcile against no generation applied yet" while generation 1 was
// applied in the lab's namespace. Generations belong to a target: the
// message names the target it looked at and those that have generations,
// with the flag that picks them; history does the same.
func TestReconcileSaysWhichTarget(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	host := withoutNetns(l.env)
	ns := l.pair.Client.Name
	elsewhere := fmt.Sprintf("generations of table inet egress are recorded for network namespace /run/netns/%s (1 generations, current 1; --netns %s)", ns, ns)
	text := mustRun(t, enforceBin, host, "reconcile")
	if !strings.Contains(text, "reconcile table inet egress in this host's network namespace: no generation was applied there yet") ||
		!strings.Contains(text, elsewhere) {
		t.Errorf("reconcile without --netns:\n%s", text)
	}
	var p struct {
		Target    string `json:"target"`
		Against   uint64 `json:"against_generation"`
		Elsewhere []struct {
			Target  string `json:"target"`
			Current uint64 `json:"current"`
		} `json:"generations_elsewhere"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, host, "reconcile", "--json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Target != "" || p.Against != 0 || len(p.Elsewhere) != 1 || p.Elsewhere[0].Target != "/run/netns/"+ns || p.Elsewhere[0].Current != 1 {
		t.Errorf("reconcile --json without --netns: %+v", p)
	}
	text = mustRun(t, enforceBin, host, "reconcile", "--netns", ns)
	for _, w := range []string{"reconcile table inet egress in network namespace /run/netns/" + ns + " against its current generation 1",
		// Every empty section says why it is empty.
		"add: none (no candidate: no flow learned since its approval was seen 1 times or more)",
		"remove: none (every approved flow was seen within 720h0m0s)",
		"(not added; --include-denied adds them): none (the monitor recorded no denied destination the learner never saw)"} {
		if !strings.Contains(text, w) {
			t.Errorf("reconcile --netns lacks %q:\n%s", w, text)
		}
	}
	if text := mustRun(t, enforceBin, host, "history"); !strings.Contains(text, "no generation of table inet egress in this host's network namespace") || !strings.Contains(text, elsewhere) {
		t.Errorf("history without --netns:\n%s", text)
	}
}

// withoutNetns is env without the lab's namespace: the host's.
func withoutNetns(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "EGRESS_NETNS=") })
}

// TestRemoveSaysItIsRecorded (item 5): remove records a generation of mode
// removed, which history shows as the current one, and says so.
func TestRemoveSaysItIsRecorded(t *testing.T) {
	l := newRolloutLab(t)
	l.run(t, "apply", "--mode", "audit")
	out := l.run(t, "remove", "--reason", "maintenance")
	if !strings.Contains(out, "removed table inet egress from network namespace") || !strings.Contains(out, "recorded as generation 2 (mode removed)") {
		t.Errorf("remove:\n%s", out)
	}
	gens, cur := l.history(t)
	if cur != 2 || len(gens) != 2 || gens[1].Mode != "removed" || gens[1].Reason != "maintenance" {
		t.Errorf("history --json after remove: current %d, %+v", cur, gens)
	}
	text := l.run(t, "history")
	if !regexp.MustCompile(`(?m)^\* 2\s.*\sremoved\s+0\s+applied\s.*maintenance`).MatchString(text) {
		t.Errorf("history does not show the removal as current:\n%s", text)
	}
	if st := l.status(t); st.Present {
		t.Errorf("the table is still there: %+v", st.Status)
	}
}

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
	lab.WantAll(t, "status", text, "follower: not running", "the counters the follower saved last", "1 connects marked", "0 packets accepted by the mark rules")
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
	lab.WantAll(t, "watch's summary", w.stderr.String(), `msg="watching stopped"`, "logged_packets=4 ", "logged_dropped=4 ", "logged_audited=0 ", "not_written_to_store=0 ")
}
