package main

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestIgnoredDNSAnswersAreCounted: a server answers dig's query twice,
// first with a wrong id (dig ignores it, and waits for the right one).
// The learner uses the right one only, and counts the other as ignored
// (no query) in its metrics, its summary line, the run record and the
// report.
func TestIgnoredDNSAnswersAreCounted(t *testing.T) {
	lab.Require(t, "dig")
	addr := lab.FreeAddr(t)
	l := startLearner(t, "--metrics-addr", addr)
	lab.ServeDNS(t, l.pair.Server, lab.ServerIP4+":53", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, lab.A("twice.lab", lab.ServerIP4, 60))
		m.Id = r.Id + 1
		_ = w.WriteMsg(m)
		m.Id = r.Id
		_ = w.WriteMsg(m)
	})
	out := l.client.MustRun(t, "dig", "+short", "+tries=1", "@"+lab.ServerIP4, "twice.lab")
	if !strings.Contains(out, lab.ServerIP4) {
		t.Fatalf("dig: %q", out)
	}
	metric := func(name string, labels map[string]string) float64 {
		v, _ := lab.MetricValue(lab.Scrape(t, "http://"+addr+"/metrics"), name, labels)
		return v
	}
	noQuery := map[string]string{"reason": "no_query"}
	lab.WaitFor(t, func() bool { return metric("egress_learn_dns_ignored_total", noQuery) >= 1 })
	fams := lab.Scrape(t, "http://"+addr+"/metrics")
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"egress_learn_dns_ignored_total", noQuery, 1},
		{"egress_learn_dns_ignored_total", nil, 1}, // every reason
		{"egress_learn_dns_queries_total", nil, 1},
		{"egress_learn_dns_queries_evicted_total", nil, 0},
	} {
		if v, ok := lab.MetricValue(fams, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	lab.WaitFor(t, func() bool { return metric("egress_learn_dns_answers_total", nil) == 1 })

	runs := l.stop(t)
	if !strings.Contains(l.stderr.String(), "dns_ignored=1") {
		t.Errorf("the summary line lacks dns_ignored=1:\n%s", l.stderr.String())
	}
	if want := (store.DNSMatch{Queries: 1, Matched: 1, NoQuery: 1}); len(runs) != 1 || runs[0].DNS != want {
		t.Errorf("runs %+v, want dns %+v", runs, want)
	}
	table, _, err := runCLI(nil, "report", "--db", l.db)
	if err != nil || !strings.Contains(table, "1 used, 1 ignored (1 with no matching query") {
		t.Errorf("report (err %v):\n%s", err, table)
	}
}
