package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
)

// TestNumbersAgree (issue 11): status, history, denied and report tell of
// the same traffic with the same numbers, and the numbers are the
// kernel's. A learner and a monitor run beside an enforcing table while
// real clients reach a learned destination, and are denied two others;
// then every command's JSON is checked against the counters nft lists.
func TestNumbersAgree(t *testing.T) {
	l := newRolloutLab(t)
	cg := lab.NewCgroup(t)
	nobody := lab.As{UID: 65534, GID: 65534, Netns: l.pair.Client, Cgroup: cg}
	other := lab.As{UID: 4242, GID: 4242, Netns: l.pair.Client, Cgroup: cg}
	l.run(t, "apply", "--mode", "enforce")
	w := startWatch(t, l)
	learner, lerr := startLearner(t, l.env, "--cgroup", cg.Path, "--flush-interval", "200ms")
	for range 3 {
		if !reaches(nobody, 8080) {
			t.Fatal("a learned flow was dropped")
		}
	}
	for range 2 {
		if !cannotReach(nobody, 8081) {
			t.Fatal("an unlearned flow went through")
		}
	}
	// Unconnected UDP: the learner counts each sendto at the call. (It
	// counts a connected UDP socket at its first datagram, after the
	// table: one the table drops never gets there.)
	for range 4 { // each fails: the table drops the datagram (EPERM)
		_, _ = other.Run("bash", "-c", "echo x | socat -u - UDP-SENDTO:"+lab.ServerIP4+":9998")
	}
	k := kernelCounters(t, l)
	w.waitEntries(t, func(es []monitor.LogEntry) bool { return uint64(len(es)) == k.rule("default enforce: everyone", 0) })
	stopLearner(t, learner, lerr)
	w.stop(t)

	k = kernelCounters(t, l) // nothing moved since: the clients are done
	dropped, accepted := k.rule("default enforce: everyone", 0), k.rule("learned ipv4 flows", 0)
	if accepted != 3 || dropped < 2+4 {
		t.Fatalf("kernel: %d accepted by the learned set, %d dropped; want 3, and at least 2 SYNs and 4 datagrams", accepted, dropped)
	}
	checkStatusNumbers(t, l, k)
	gen := checkHistoryNumbers(t, l)
	checkDeniedNumbers(t, l, dropped, gen)
	checkReportNumbers(t, l, accepted)
}

// nftCounters are the counters of each rule of our output chain, by
// comment, as nft lists them: every counter of the rule, in order.
type nftCounters map[string][]uint64

func (k nftCounters) rule(comment string, i int) uint64 {
	if c := k[comment]; len(c) > i {
		return c[i]
	}
	return 0
}

// kernelCounters reads the counters with nft -j, not with our code.
func kernelCounters(t *testing.T, l *rolloutLab) nftCounters {
	t.Helper()
	return lab.RuleCounters(t, l.pair.Client, "egress")
}

// checkStatusNumbers: status shows the kernel's counters, and every drop
// was logged.
func checkStatusNumbers(t *testing.T, l *rolloutLab, k nftCounters) {
	t.Helper()
	var s struct {
		defaultCounters
		Counters []struct {
			Rule    string `json:"rule"`
			Packets uint64 `json:"packets"`
		} `json:"counters"`
	}
	if err := json.Unmarshal([]byte(l.run(t, "status", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Counters {
		if c.Packets != k.rule(c.Rule, 0) {
			t.Errorf("status: rule %q counted %d, nft %d", c.Rule, c.Packets, k.rule(c.Rule, 0))
		}
	}
	drop := "default enforce: everyone"
	if s.Dropped.Packets != k.rule(drop, 0) || s.DropsLogged == nil || s.DropsLogged.Packets != k.rule(drop, 1) || s.DropsLogged.Packets != s.Dropped.Packets {
		t.Errorf("status: dropped %+v, logged %+v; nft %v", s.Dropped, s.DropsLogged, k[drop])
	}
	want := fmt.Sprintf("dropped by the default rules (no allow rule matched): %d packets", k.rule(drop, 0))
	if text := l.run(t, "status"); !strings.Contains(text, want) {
		t.Errorf("status lacks %q:\n%s", want, text)
	}
}

// generation is what the tests read of a generation.
type generation struct {
	N        uint64 `json:"n"`
	Mode     string `json:"mode"`
	Elements int    `json:"elements"`
	Time     string `json:"time"`
}

// checkHistoryNumbers: the current generation is the one applied, with as
// many elements as the kernel's sets hold.
func checkHistoryNumbers(t *testing.T, l *rolloutLab) generation {
	t.Helper()
	var h struct {
		Current     uint64       `json:"current"`
		Generations []generation `json:"generations"`
	}
	if err := json.Unmarshal([]byte(l.run(t, "history", "--json")), &h); err != nil {
		t.Fatal(err)
	}
	elements := 0
	for _, s := range l.status(t).Sets {
		if strings.HasPrefix(s.Name, "allow") {
			elements += s.Elements
		}
	}
	if h.Current != 1 || len(h.Generations) != 1 || h.Generations[0].Elements != elements || elements != 2 || h.Generations[0].Mode != "enforce" {
		t.Fatalf("history: %+v; the kernel's sets hold %d elements", h, elements)
	}
	return h.Generations[0]
}

// checkDeniedNumbers: denied counts what the kernel dropped (every drop
// was logged), by destination, since the apply of the current generation.
func checkDeniedNumbers(t *testing.T, l *rolloutLab, dropped uint64, gen generation) {
	t.Helper()
	var d struct {
		Dropped      uint64 `json:"dropped"`
		Audited      uint64 `json:"audited"`
		Destinations []struct {
			UID     uint32 `json:"uid"`
			Proto   string `json:"proto"`
			Port    uint16 `json:"port"`
			Dropped uint64 `json:"dropped"`
		} `json:"destinations"`
		Rate struct {
			Generation uint64 `json:"generation"`
			Applied    string `json:"applied"`
			DropAfter  uint64 `json:"drop_after"`
		} `json:"rate"`
	}
	if err := json.Unmarshal([]byte(l.run(t, "denied", "--json")), &d); err != nil {
		t.Fatal(err)
	}
	by := map[string]uint64{}
	for _, x := range d.Destinations {
		by[fmt.Sprintf("%d %s/%d", x.UID, x.Proto, x.Port)] = x.Dropped
	}
	if d.Dropped != dropped || d.Audited != 0 || by["4242 udp/9998"] != 4 || by["65534 tcp/8081"] != dropped-4 || len(by) != 2 {
		t.Errorf("denied: %d dropped (%v), the kernel %d", d.Dropped, by, dropped)
	}
	if d.Rate.Generation != gen.N || d.Rate.DropAfter != dropped || d.Rate.Applied != gen.Time {
		t.Errorf("denied's last apply %+v, history's generation %+v, the kernel dropped %d", d.Rate, gen, dropped)
	}
}

// checkReportNumbers: the learner counted the connects the kernel
// accepted (the store held 3 hits before), and one attempt per denied
// client run (curl's SYNs sent again are packets, not attempts).
func checkReportNumbers(t *testing.T, l *rolloutLab, accepted uint64) {
	t.Helper()
	var rows []struct {
		UID   uint32 `json:"uid"`
		Proto string `json:"proto"`
		Port  uint16 `json:"port"`
		Hits  uint64 `json:"hits"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, learnBin, l.env, "report", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	hits := map[string]uint64{}
	for _, r := range rows {
		hits[fmt.Sprintf("%d %s/%d", r.UID, r.Proto, r.Port)] = r.Hits
	}
	if hits["65534 tcp/8080"] != 3+accepted || hits["65534 tcp/8081"] != 2 || hits["4242 udp/9998"] != 4 {
		t.Errorf("report hits %v; the learned set accepted %d connects", hits, accepted)
	}
}
