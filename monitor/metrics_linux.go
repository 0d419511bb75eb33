//go:build linux

package monitor

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/promutil"
	"github.com/egresskit/egress/store"
)

// Collector exposes the monitor's counts and the kernel's view of our
// table as Prometheus metrics. Destinations and users are the top K by
// packets; the rest is folded into destination="other" (user="other").
//
// Collect reads the kernel and the store: serve it through a snapshot
// gathered in the background (cli.MetricsSnapshot), so that a scrape never
// waits on them.
type Collector struct {
	Monitor  *Monitor
	Target   nft.Target
	Table    string
	Store    *store.Store // generations and DNS names (optional)
	UserName func(uint32) string
	TopK     int

	// Resolvers are the users whose DNS answers name another user's
	// destinations (dns_resolver_users; see store.NamesFor).
	Resolvers []uint32
}

// reading is what Collect reads from the kernel and the store.
type reading struct {
	status    *nft.Status
	statusErr error
	gen       *store.Generation
	names     map[store.FlowKey][]string
}

var (
	descDenied = prometheus.NewDesc("egress_denied_packets_total",
		"Packets the default rule logged (action drop or audit), by user and destination; the top destinations, the rest as destination=\"other\". A destination that displaced others in the monitor's bounded summary may be overstated by at most their packets.",
		[]string{"action", "uid", "user", "proto", "destination", "port", "hostname"}, nil)
	descDeniedUser = prometheus.NewDesc("egress_denied_packets_by_user_total",
		"Packets the default rule logged, by user; the top users, the rest as user=\"other\".",
		[]string{"action", "uid", "user"}, nil)
	descDeniedService = prometheus.NewDesc("egress_denied_packets_by_service_total",
		"Packets the default rule logged whose sending socket the watch found in a service (per-service rules), by user and service (cgroup path); the top pairs, the rest as service=\"other\".",
		[]string{"action", "uid", "user", "service"}, nil)
	descEntries = prometheus.NewDesc("egress_monitor_log_entries_total",
		"NFLOG messages the monitor received.", nil, nil)
	descUnlogged = prometheus.NewDesc("egress_unlogged_packets_total",
		"Packets the default rules counted but did not log, over drop_log_rate (action drop) or audit_log_rate (action audit): the kernel's counter before the rate limit minus the one after it.", []string{"table", "action"}, nil)
	descUnrecorded = prometheus.NewDesc("egress_monitor_unrecorded_packets_total",
		"Logged packets whose destination the monitor could not keep until the next flush (its bound on destinations between flushes); they are in the totals, not in the store's observations.", []string{"action"}, nil)
	descReceiveErrors = prometheus.NewDesc("egress_monitor_receive_errors_total",
		"Errors reading the NFLOG socket (ENOBUFS: its buffer overflowed).", nil, nil)
	descLostLogs = prometheus.NewDesc("egress_monitor_lost_log_entries_total",
		"Log messages the kernel sent that the monitor never received (gaps in their sequence numbers: its socket overflowed; a loss shows when a later message arrives).", nil, nil)
	descTracked = prometheus.NewDesc("egress_monitor_tracked_entries",
		"Entries of the monitor's bounded structures: the top destinations, users and services, and the destinations pending the next flush.", []string{"structure", "bound"}, nil)
	descPresent = prometheus.NewDesc("egress_table_present",
		"1 when our table is installed.", []string{"table"}, nil)
	descMode = prometheus.NewDesc("egress_table_mode",
		"1 for the mode of our table: audit, enforce or staged.", []string{"table", "mode"}, nil)
	descElements = prometheus.NewDesc("egress_set_elements",
		"Elements of our table's sets.", []string{"table", "set"}, nil)
	descServiceElements = prometheus.NewDesc("egress_service_elements",
		"Elements of each service in our table's service sets (match service or user,service), by cgroup path.", []string{"table", "service"}, nil)
	descRulePackets = prometheus.NewDesc("egress_rule_packets_total",
		"Packet counter of each rule of our table, by rule comment.", []string{"table", "rule"}, nil)
	descRuleBytes = prometheus.NewDesc("egress_rule_bytes_total",
		"Byte counter of each rule of our table, by rule comment.", []string{"table", "rule"}, nil)
	descKernelDropped = prometheus.NewDesc("egress_kernel_dropped_packets_total",
		"Packets the default rules dropped, logged or not (the kernel's counters before the log's rate limit; they restart at each apply).", []string{"table"}, nil)
	descKernelAudited = prometheus.NewDesc("egress_kernel_audited_packets_total",
		"Packets the default rules audited (let through), logged or not (the kernel's counters before the log's rate limit; they restart at each apply).", []string{"table"}, nil)
	descGeneration = prometheus.NewDesc("egress_generation",
		"Number of the current generation of our table.", []string{"table"}, nil)
	descLastApply = prometheus.NewDesc("egress_last_apply_timestamp_seconds",
		"When the current generation was applied.", []string{"table"}, nil)
)

// Describe sends the descriptions of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	promutil.Describe(ch, descDenied, descDeniedUser, descDeniedService, descEntries, descUnlogged, descUnrecorded, descReceiveErrors, descLostLogs,
		descTracked, descPresent, descMode, descElements, descServiceElements, descRulePackets, descRuleBytes, descKernelDropped, descKernelAudited,
		descGeneration, descLastApply)
}

func (c *Collector) user(uid uint32) string {
	if uid == NoUID {
		return "none"
	}
	if c.UserName != nil {
		return c.UserName(uid)
	}
	return strconv.FormatUint(uint64(uid), 10)
}

func (c *Collector) topK() int {
	if c.TopK <= 0 {
		return 20
	}
	return c.TopK
}

// read reads the kernel and the store.
func (c *Collector) read() *reading {
	r := &reading{}
	r.status, r.statusErr = nft.Open(c.Target).Status(c.Table, false)
	if c.Store == nil {
		return r
	}
	r.gen, _ = rollout.Current(c.Store, c.Target, c.Table)
	if c.Monitor != nil {
		top, _, _ := c.Monitor.Top(c.topK())
		keys := make([]store.FlowKey, len(top))
		for i, t := range top {
			keys[i] = t.key()
		}
		r.names, _ = c.Store.FlowNames(keys, c.Resolvers)
	}
	return r
}

// Collect reads the monitor, the kernel and the store.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	r := c.read()
	if c.Monitor != nil {
		c.collectMonitor(ch, r.names)
	}
	c.collectReading(ch, r)
}

func (c *Collector) collectMonitor(ch chan<- prometheus.Metric, names map[store.FlowKey][]string) {
	counter := prometheus.CounterValue
	top, other, entries := c.Monitor.Top(c.topK())
	for _, t := range top {
		host := ""
		if n := names[t.key()]; len(n) > 0 {
			host = n[0]
		}
		ch <- prometheus.MustNewConstMetric(descDenied, counter, float64(t.Hits), t.Action,
			strconv.FormatUint(uint64(t.UID), 10), c.user(t.UID), plan.ProtoName(t.Proto), t.IP.String(), strconv.Itoa(int(t.Port)), host)
	}
	for action, n := range other {
		ch <- prometheus.MustNewConstMetric(descDenied, counter, float64(n), action, "", "other", "", "other", "", "")
	}
	users, otherUsers := c.Monitor.ByUser(c.topK())
	for _, u := range users {
		ch <- prometheus.MustNewConstMetric(descDeniedUser, counter, float64(u.Hits), u.Action, strconv.FormatUint(uint64(u.UID), 10), c.user(u.UID))
	}
	for action, n := range otherUsers {
		ch <- prometheus.MustNewConstMetric(descDeniedUser, counter, float64(n), action, "", "other")
	}
	svcs, otherSvcs := c.Monitor.ByService(c.topK())
	for _, s := range svcs {
		ch <- prometheus.MustNewConstMetric(descDeniedService, counter, float64(s.Hits), s.Action, strconv.FormatUint(uint64(s.UID), 10), c.user(s.UID), s.Service)
	}
	for action, n := range otherSvcs {
		ch <- prometheus.MustNewConstMetric(descDeniedService, counter, float64(n), action, "", "", "other")
	}
	ch <- prometheus.MustNewConstMetric(descEntries, counter, float64(entries))
	st := c.Monitor.Stats()
	ch <- prometheus.MustNewConstMetric(descUnrecorded, counter, float64(st.UnrecordedDrop), ObsActionDrop)
	ch <- prometheus.MustNewConstMetric(descUnrecorded, counter, float64(st.UnrecordedAudit), ObsActionAudit)
	ch <- prometheus.MustNewConstMetric(descReceiveErrors, counter, float64(st.ReceiveErrors))
	ch <- prometheus.MustNewConstMetric(descLostLogs, counter, float64(st.LostLogs))
	ch <- prometheus.MustNewConstMetric(descTracked, prometheus.GaugeValue, float64(st.Tracked), "top", strconv.Itoa(st.TrackedCap))
	ch <- prometheus.MustNewConstMetric(descTracked, prometheus.GaugeValue, float64(st.Pending), "pending", strconv.Itoa(st.PendingCap))
}

func (c *Collector) collectReading(ch chan<- prometheus.Metric, r *reading) {
	counter := prometheus.CounterValue
	if r.statusErr != nil {
		ch <- prometheus.NewInvalidMetric(descPresent, r.statusErr)
	} else {
		present := 0.0
		if st := r.status; st.Present {
			present = 1
			ch <- prometheus.MustNewConstMetric(descMode, prometheus.GaugeValue, 1, c.Table, string(st.Mode))
			for _, s := range st.Sets {
				ch <- prometheus.MustNewConstMetric(descElements, prometheus.GaugeValue, float64(s.Elements), c.Table, s.Name)
			}
			for _, s := range st.Services {
				ch <- prometheus.MustNewConstMetric(descServiceElements, prometheus.GaugeValue, float64(s.Elements), c.Table, s.Service)
			}
			for _, rc := range st.Counters {
				ch <- prometheus.MustNewConstMetric(descRulePackets, counter, float64(rc.Packets), c.Table, rc.Rule)
				ch <- prometheus.MustNewConstMetric(descRuleBytes, counter, float64(rc.Bytes), c.Table, rc.Rule)
			}
			ch <- prometheus.MustNewConstMetric(descKernelDropped, counter, float64(st.Dropped.Packets), c.Table)
			ch <- prometheus.MustNewConstMetric(descKernelAudited, counter, float64(st.Audited.Packets), c.Table)
			for _, u := range []struct {
				action string
				all    nft.Counter
				logged *nft.Counter
			}{{ObsActionDrop, st.Dropped, st.DropsLogged}, {ObsActionAudit, st.Audited, st.AuditsLogged}} {
				if u.logged != nil && u.all.Packets >= u.logged.Packets {
					ch <- prometheus.MustNewConstMetric(descUnlogged, counter, float64(u.all.Packets-u.logged.Packets), c.Table, u.action)
				}
			}
		}
		ch <- prometheus.MustNewConstMetric(descPresent, prometheus.GaugeValue, present, c.Table)
	}
	if r.gen != nil {
		ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(r.gen.N), c.Table)
		ch <- prometheus.MustNewConstMetric(descLastApply, prometheus.GaugeValue, float64(r.gen.Time.Unix()), c.Table)
	}
}
