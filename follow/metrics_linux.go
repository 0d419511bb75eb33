//go:build linux

package follow

import (
	"github.com/egresskit/egress/internal/promutil"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes a follower's counters as Prometheus metrics.
type Collector struct{ F *Follower }

var (
	descFollowAnswers = prometheus.NewDesc("egress_follow_answers_total",
		"DNS answers the follower saw, by outcome: used, or ignored and why.", []string{"outcome"}, nil)
	descFollowRecords = prometheus.NewDesc("egress_follow_records_owner_mismatch_total",
		"Address records of used answers left out: their owner is not the question or a name of its CNAME chain.", nil, nil)
	descFollowQueries = prometheus.NewDesc("egress_follow_queries_total",
		"DNS queries of users with name rules: remembered, refused because the user's share of the query table was full, or expired unanswered.", []string{"result"}, nil)
	descFollowElements = prometheus.NewDesc("egress_follow_elements_total",
		"Addresses added to or refreshed in the follow sets, left out by the per-name bound, or with a TTL capped by follow_ttl_max.", []string{"result"}, nil)
	descFollowMarked = prometheus.NewDesc("egress_follow_connects_marked_total",
		"Connects the follower marked: a DNS answer authorized their destination. A learned or followed set accepts most of them before the mark rules do (see egress_follow_mark_rules_accepted_packets).", nil, nil)
	descFollowMarkAccepted = prometheus.NewDesc("egress_follow_mark_rules_accepted_packets",
		"Packets the table's follow-mark rules accepted (their kernel counters, which restart at each apply): just-resolved destinations no set held yet.", nil, nil)
	descFollowMarkDropped = prometheus.NewDesc("egress_follow_mark_dropped_total",
		"Packets carrying the follow mark that the kernel dropped: no authorization of their socket covers their destination.", nil, nil)
	descFollowLatency = prometheus.NewDesc("egress_follow_latency_seconds",
		"Time from a DNS answer reaching the host to its addresses being in the set.", []string{"quantile"}, nil)
)

// Describe sends the descriptions.
func (c Collector) Describe(ch chan<- *prometheus.Desc) {
	promutil.Describe(ch, descFollowAnswers, descFollowRecords, descFollowQueries, descFollowElements,
		descFollowMarked, descFollowMarkAccepted, descFollowMarkDropped, descFollowLatency)
}

// Collect reads the follower's counters.
func (c Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.F.Stats()
	cv := prometheus.CounterValue
	for outcome, n := range map[string]uint64{"used": s.Accepted, "not_resolver": s.NotResolver, "no_query": s.NoQuery,
		"question_mismatch": s.Mismatch, "malformed": s.Malformed, "other_netns": s.OtherNetns, "not_followed": s.NoRule} {
		ch <- prometheus.MustNewConstMetric(descFollowAnswers, cv, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(descFollowRecords, cv, float64(s.OwnerMismatch))
	for result, n := range map[string]uint64{"remembered": s.Queries, "over_share": s.OverShare, "expired": s.QueriesExpired} {
		ch <- prometheus.MustNewConstMetric(descFollowQueries, cv, float64(n), result)
	}
	for result, n := range map[string]uint64{"added": s.Added, "refreshed": s.Refreshed, "dropped_by_bound": s.BoundDropped,
		"ttl_capped": s.TTLCapped, "error": s.NftErrors} {
		ch <- prometheus.MustNewConstMetric(descFollowElements, cv, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(descFollowMarked, cv, float64(s.Marked))
	if s.MarkRules != nil {
		ch <- prometheus.MustNewConstMetric(descFollowMarkAccepted, prometheus.GaugeValue, float64(s.MarkRules.Packets))
	}
	ch <- prometheus.MustNewConstMetric(descFollowMarkDropped, cv, float64(s.MarkDropped))
	ch <- prometheus.MustNewConstMetric(descFollowLatency, prometheus.GaugeValue, s.LatencyP50/1e6, "0.5")
	ch <- prometheus.MustNewConstMetric(descFollowLatency, prometheus.GaugeValue, s.LatencyP99/1e6, "0.99")
}
