//go:build linux

package learn

import (
	"time"

	"github.com/egresskit/egress/internal/promutil"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descEvents    = prometheus.NewDesc("egress_learn_events_total", "Connection attempts recorded (after the ignore lists).", nil, nil)
	descIgnored   = prometheus.NewDesc("egress_learn_ignored_total", "Connection attempts left out by the ignore lists.", nil, nil)
	descLost      = prometheus.NewDesc("egress_learn_lost_events_total", "Ring buffer records the kernel could not deliver.", nil, nil)
	descUncounted = prometheus.NewDesc("egress_learn_uncounted_events_total", "Attempts neither counted in the flow map nor recorded: lost hits.", nil, nil)
	descDNS       = prometheus.NewDesc("egress_learn_dns_answers_total", "DNS answers parsed.", nil, nil)
	descDNSLost   = prometheus.NewDesc("egress_learn_dns_lost_total", "DNS answers and queries the kernel could not deliver or copy.", nil, nil)
	descDNSIgn    = prometheus.NewDesc("egress_learn_dns_ignored_total", "DNS answers not used, by reason: no_query (the socket sent no query with that id, or it was answered already), mismatch (another question), other_server (not from where the query went), evicted (the query was pushed out of the table), malformed.", []string{"reason"}, nil)
	descDNSQ      = prometheus.NewDesc("egress_learn_dns_queries_total", "DNS queries remembered, waiting for their answer.", nil, nil)
	descDNSQEvict = prometheus.NewDesc("egress_learn_dns_queries_evicted_total", "DNS queries pushed out of the table before their answer (over their user's share, or the table full).", nil, nil)
	descFlows     = prometheus.NewDesc("egress_learn_flows", "Distinct flows known (stored or pending).", nil, nil)
	descNew       = prometheus.NewDesc("egress_learn_new_flows_last_minute", "Flows seen for the first time in the last minute.", nil, nil)
	descSinceNew  = prometheus.NewDesc("egress_learn_seconds_since_last_new_flow", "Seconds since the last new flow (since the run started when there was none).", nil, nil)
)

// metricsCollector exposes a learning run's figures.
type metricsCollector struct{ l *learner }

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	promutil.Describe(ch, descEvents, descIgnored, descLost, descUncounted, descDNS, descDNSLost, descDNSIgn, descDNSQ, descDNSQEvict, descFlows, descNew, descSinceNew)
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	s := c.l.agg.status(now)
	ps, _ := c.l.probe.Stats()
	since := now.Sub(c.l.start)
	if s.SinceLastNew >= 0 {
		since = s.SinceLastNew
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	ch <- prometheus.MustNewConstMetric(descEvents, counter, float64(s.Events))
	ch <- prometheus.MustNewConstMetric(descIgnored, counter, float64(s.Ignored))
	ch <- prometheus.MustNewConstMetric(descLost, counter, float64(ps.Lost()))
	ch <- prometheus.MustNewConstMetric(descUncounted, counter, float64(ps.EventsLost))
	ch <- prometheus.MustNewConstMetric(descDNS, counter, float64(s.DNSAnswers))
	ch <- prometheus.MustNewConstMetric(descDNSLost, counter, float64(ps.DNSLost+ps.DNSErrors+ps.DNSQueryLost))
	d := ps.DNS
	for reason, n := range map[string]uint64{"no_query": d.NoQuery, "mismatch": d.Mismatch, "other_server": d.OtherServer, "evicted": d.Evicted, "malformed": d.Malformed} {
		ch <- prometheus.MustNewConstMetric(descDNSIgn, counter, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descDNSQ, counter, float64(d.Queries))
	ch <- prometheus.MustNewConstMetric(descDNSQEvict, counter, float64(d.QueriesEvicted))
	ch <- prometheus.MustNewConstMetric(descFlows, gauge, float64(s.Flows))
	ch <- prometheus.MustNewConstMetric(descNew, gauge, float64(s.NewLastMinute))
	ch <- prometheus.MustNewConstMetric(descSinceNew, gauge, since.Seconds())
}
