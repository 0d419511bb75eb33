//go:build linux

package nft

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// deltaNS is a namespace of its own and our netlink in it.
func deltaNS(t *testing.T) (*lab.Netns, *Netlink) {
	t.Helper()
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	return ns, Open(Target{Netns: ns.Name})
}

// nftIn runs nft in ns.
func nftIn(t *testing.T, ns *lab.Netns, args ...string) string {
	t.Helper()
	return lab.MustRun(t, "ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...)
}

// deltaPlans are a plan of 300 flows (IPv4, IPv6, followed names) and the
// next: 10 flows gone, 10 new, the hits of 20 changed (their comments).
func deltaPlans(mode plan.Mode) (from, to *plan.Plan) {
	flows := scaleFlows(0, 300)
	next := append([]store.Flow(nil), flows[10:]...)
	for i := 0; i < 200; i += 10 {
		next[i].Hits += 1000
	}
	next = append(next, scaleFlows(5000, 10)...)
	o := scaleOptions(plan.ModeAudit)
	o.Follow = &plan.FollowOptions{Mode: plan.FollowBoth}
	from = plan.Build(flows, o)
	o.Mode = mode
	return from, plan.Build(next, o)
}

// fullTable is the listing of to applied whole, as generation gen, in a
// namespace of its own.
func fullTable(t *testing.T, to *plan.Plan, gen uint64) string {
	t.Helper()
	ns, n := deltaNS(t)
	if _, err := n.ApplyWith(to, ApplyOptions{Generation: gen}); err != nil {
		t.Fatal(err)
	}
	return lab.ListTable(t, ns, to.Table)
}

// TestDeltaMakesTheFullTable: a delta from the table of one plan to the
// next makes the table a full apply of the next plan makes (nft list, and
// the stamp), for element changes, comment changes, and audit to enforce
// (the policy and the default rules).
func TestDeltaMakesTheFullTable(t *testing.T) {
	for _, mode := range []plan.Mode{plan.ModeAudit, plan.ModeEnforce} {
		t.Run(string(mode), func(t *testing.T) {
			from, to := deltaPlans(mode)
			ns, n := deltaNS(t)
			if _, err := n.ApplyWith(from, ApplyOptions{Generation: 1}); err != nil {
				t.Fatal(err)
			}
			res, err := n.ApplyWith(to, ApplyOptions{Generation: 2, From: plan.IndexOf(from), FromGeneration: 1})
			if err != nil {
				t.Fatal(err)
			}
			if res.Delta == nil || res.FullReason != "" || !res.Verified {
				t.Fatalf("not a verified delta: %+v (%q)", res, res.FullReason)
			}
			d := res.Delta
			if d.ElementsAdded != 30 || d.ElementsRemoved != 30 || d.ElementsChanged != 20 {
				t.Errorf("delta: %+v; want 30 added, 30 removed, 20 of them changed", d)
			}
			if (mode == plan.ModeEnforce) != (d.Policy == "drop" && d.RulesAdded > 0) {
				t.Errorf("delta to %s: %+v", mode, d)
			}
			if got, want := lab.ListTable(t, ns, to.Table), fullTable(t, to, 2); got != want {
				t.Errorf("after the delta:\n%s\nafter a full apply:\n%s", got, want)
			}
			st, err := n.Status(to.Table, true)
			if err != nil || st.Generation != 2 || st.matches(to) != nil {
				t.Errorf("status after the delta: generation %d, %v, %v", st.Generation, st.matches(to), err)
			}
		})
	}
}

// ruleHandle is the handle of the rule of comment in our chain.
func ruleHandle(t *testing.T, ns *lab.Netns, comment string) string {
	t.Helper()
	m := regexp.MustCompile(`comment "` + regexp.QuoteMeta(comment) + `" # handle (\d+)`).FindStringSubmatch(nftIn(t, ns, "-a", "list", "chain", "inet", "egress", "output"))
	if m == nil {
		t.Fatalf("no rule %q", comment)
	}
	return m[1]
}

// TestDeltaOnATamperedTableReplacesIt: when the kernel's table is not the
// one the store says (changed by hand, replaced, another generation), the
// apply replaces the whole table, says why, and the table is the one a
// full apply makes.
func TestDeltaOnATamperedTableReplacesIt(t *testing.T) {
	from, to := deltaPlans(plan.ModeEnforce)
	want := fullTable(t, to, 2)
	rule := from.Rules[len(from.Rules)-2]
	for _, c := range []struct {
		name, why string
		tamper    func(t *testing.T, ns *lab.Netns, n *Netlink)
	}{
		{"element added", "set allow4 holds 271 elements", func(t *testing.T, ns *lab.Netns, n *Netlink) {
			nftIn(t, ns, "add", "element", "inet", "egress", "allow4", "{ 4321 . 203.0.113.9 . tcp . 22 }")
		}},
		{"element deleted", "set allow4 holds 269 elements", func(t *testing.T, ns *lab.Netns, n *Netlink) {
			nftIn(t, ns, "delete", "element", "inet", "egress", "allow4", "{ 1001 . 10.0.0.1 . tcp . 443 }")
		}},
		{"rule changed", "was changed since it was applied", func(t *testing.T, ns *lab.Netns, n *Netlink) {
			nftIn(t, ns, "replace", "rule", "inet", "egress", "output", "handle", ruleHandle(t, ns, rule.Comment),
				"meta skuid 4321 accept", "comment", `"`+rule.Comment+`"`)
		}},
		{"rule added", "rules, not", func(t *testing.T, ns *lab.Netns, n *Netlink) {
			nftIn(t, ns, "add", "rule", "inet", "egress", "output", "meta skuid 4321 accept")
		}},
		{"table replaced by nft -f", "carries no generation stamp", func(t *testing.T, ns *lab.Netns, n *Netlink) {
			var b bytes.Buffer
			if err := from.Text(&b); err != nil {
				t.Fatal(err)
			}
			file := t.TempDir() + "/from.nft"
			if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			nftIn(t, ns, "-f", file)
		}},
		{"another generation", "the table in the kernel is generation 7, the store says 1", func(t *testing.T, ns *lab.Netns, n *Netlink) {
			if _, err := n.ApplyWith(from, ApplyOptions{Generation: 7}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns, n := deltaNS(t)
			if _, err := n.ApplyWith(from, ApplyOptions{Generation: 1}); err != nil {
				t.Fatal(err)
			}
			c.tamper(t, ns, n)
			res, err := n.ApplyWith(to, ApplyOptions{Generation: 2, From: plan.IndexOf(from), FromGeneration: 1})
			if err != nil {
				t.Fatal(err)
			}
			if res.Delta != nil || !res.KernelDiffers || !strings.Contains(res.FullReason, c.why) {
				t.Errorf("delta %+v, reason %q; want a replace because %q", res.Delta, res.FullReason, c.why)
			}
			if got := lab.ListTable(t, ns, to.Table); got != want {
				t.Errorf("after the replace:\n%s\nafter a full apply:\n%s", got, want)
			}
		})
	}
}

// generations counts the ruleset generations (committed transactions)
// of the namespace while fn runs, and the changes each carried: a
// transaction of our own marks the end.
func generations(t *testing.T, ns *lab.Netns, fn func()) [][]*nftables.MonitorEvent {
	t.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(1 << 16))
	defer mon.Close()
	events, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		t.Fatal(err)
	}
	fn()
	nftIn(t, ns, "add", "table", "inet", "delta_end")
	var gens [][]*nftables.MonitorEvent
	deadline := time.After(time.Minute) // a guard against a hang, not a timing
	for {
		select {
		case ev := <-events:
			if ev == nil {
				t.Fatal("the monitor stopped")
			}
			for _, ch := range ev.Changes {
				if tab, ok := ch.Data.(*nftables.Table); ok && tab.Name == "delta_end" {
					return gens
				}
			}
			gens = append(gens, ev.Changes)
		case <-deadline:
			t.Fatal("the end marker never came")
		}
	}
}

// TestDeltaIsOneTransaction: the delta (elements deleted and added, the
// rules, the stamp) commits as one ruleset generation; a delta the kernel
// refuses changes nothing (the tampered table stays as it was).
func TestDeltaIsOneTransaction(t *testing.T) {
	from, to := deltaPlans(plan.ModeEnforce)
	ns, n := deltaNS(t)
	if _, err := n.ApplyWith(from, ApplyOptions{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	var res *ApplyResult
	gens := generations(t, ns, func() {
		var err error
		if res, err = n.ApplyWith(to, ApplyOptions{Generation: 2, From: plan.IndexOf(from), FromGeneration: 1}); err != nil {
			t.Fatal(err)
		}
	})
	if res.Delta == nil {
		t.Fatalf("not a delta: %s", res.FullReason)
	}
	if len(gens) != 1 {
		t.Fatalf("the delta took %d transactions, want 1", len(gens))
	}
	kinds := map[nftables.MonitorEventType]int{}
	for _, ev := range gens[0] {
		kinds[ev.Type]++
	}
	if kinds[nftables.MonitorEventTypeNewSetElem] == 0 || kinds[nftables.MonitorEventTypeDelSetElem] == 0 ||
		kinds[nftables.MonitorEventTypeNewRule] == 0 || kinds[nftables.MonitorEventTypeDelRule] == 0 {
		t.Errorf("the transaction's changes by type: %v", kinds)
	}

	// Refused: an element the delta deletes is gone, another one took its
	// place (the counts agree). The kernel refuses the deletion, and none
	// of the additions before or after it is in the table.
	ns, n = deltaNS(t)
	if _, err := n.ApplyWith(from, ApplyOptions{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	nftIn(t, ns, "delete", "element", "inet", "egress", "allow4", "{ 1009 . 10.0.0.9 . tcp . 443 }")
	nftIn(t, ns, "add", "element", "inet", "egress", "allow4", "{ 4321 . 203.0.113.9 . tcp . 22 }")
	before := lab.ListTable(t, ns, from.Table)
	o := ApplyOptions{Generation: 2, From: plan.IndexOf(from), FromGeneration: 1}
	d, _ := o.delta(to)
	_, why, err := n.applyDelta(to, o, d, time.Now())
	if err != nil || !strings.Contains(why, "the kernel refused the changes") {
		t.Fatalf("delta on a table without an element it deletes: %q, %v", why, err)
	}
	if after := lab.ListTable(t, ns, from.Table); after != before {
		t.Errorf("a refused delta changed the table:\n%s\nbefore:\n%s", after, before)
	}
}
