//go:build linux

package namecheck

import (
	"strconv"
	"sync"

	"github.com/egresskit/egress/internal/promutil"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the name check's counters as Prometheus metrics: the
// kernel's, and the refused connections by user (from the events).
type Collector struct {
	mu      sync.Mutex
	c       *Checker
	refused map[refusedKey]uint64
}

type refusedKey struct {
	uid             uint32
	verdict, action string
}

// NewCollector makes a collector; Attach gives it the checker, Note the
// events.
func NewCollector() *Collector { return &Collector{refused: map[refusedKey]uint64{}} }

// Attach sets the checker whose counters are read.
func (m *Collector) Attach(c *Checker) {
	m.mu.Lock()
	m.c = c
	m.mu.Unlock()
}

// Note counts a refused connection.
func (m *Collector) Note(e Event) {
	action := "audited"
	if e.Enforced {
		action = "dropped"
	}
	m.mu.Lock()
	m.refused[refusedKey{e.UID, e.Verdict, action}]++
	m.mu.Unlock()
}

var (
	descConns = prometheus.NewDesc("egress_namecheck_connections_total",
		"Connections to name-checked destinations whose first data was checked, by result: passed, mismatch (a name not allowed) or no_name.", []string{"result"}, nil)
	descDropped = prometheus.NewDesc("egress_namecheck_segments_dropped_total",
		"Segments the name check dropped (enforce).", nil, nil)
	descGathered = prometheus.NewDesc("egress_namecheck_segments_gathered_total",
		"Segments held to gather a ClientHello or request split over several segments.", nil, nil)
	descLost = prometheus.NewDesc("egress_namecheck_events_lost_total",
		"Refused connections user space was not told about (the ring buffer was full): counted, not logged.", nil, nil)
	descNoStore = prometheus.NewDesc("egress_namecheck_no_storage_total",
		"Sockets the kernel could not give socket storage (dropped when name-checked in enforce).", nil, nil)
	descRefused = prometheus.NewDesc("egress_namecheck_refused_total",
		"Refused connections by user, verdict (mismatch or no_name) and action (dropped or audited).", []string{"uid", "verdict", "action"}, nil)
	descDests = prometheus.NewDesc("egress_namecheck_destinations",
		"Name-checked destinations set in the kernel.", nil, nil)
	descFollowedStale = prometheus.NewDesc("egress_namecheck_followed_map_replaced",
		"1 when the follower's pinned map of followed destinations is no longer the one the check reads: the addresses the follower opens are not name-checked until namecheck restarts.", nil, nil)
)

// Describe sends the descriptions.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	promutil.Describe(ch, descConns, descDropped, descGathered, descLost, descNoStore, descRefused, descDests, descFollowedStale)
}

// Collect reads the counters.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cv := prometheus.CounterValue
	for k, n := range m.refused {
		ch <- prometheus.MustNewConstMetric(descRefused, cv, float64(n), strconv.FormatUint(uint64(k.uid), 10), k.verdict, k.action)
	}
	if m.c == nil {
		return
	}
	s, err := m.c.Stats()
	if err != nil {
		return
	}
	for result, n := range map[string]uint64{"passed": s.Passed, "mismatch": s.Mismatch, "no_name": s.NoName} {
		ch <- prometheus.MustNewConstMetric(descConns, cv, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(descDropped, cv, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descGathered, cv, float64(s.Gathered))
	ch <- prometheus.MustNewConstMetric(descLost, cv, float64(s.Lost))
	ch <- prometheus.MustNewConstMetric(descNoStore, cv, float64(s.NoStore))
	ch <- prometheus.MustNewConstMetric(descDests, prometheus.GaugeValue, float64(m.c.Destinations()))
	if replaced, _, err := m.c.followedReplaced(); err == nil && m.c.followed != nil {
		v := 0.0
		if replaced {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descFollowedStale, prometheus.GaugeValue, v)
	}
}
