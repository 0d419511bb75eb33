//go:build linux

package enforce

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egresskit/egress/store"
)

// WatchOptions tune Watch.
type WatchOptions struct {
	Group uint16
	// Store receives the observations every Flush (nil: keep them in
	// memory only).
	Store *store.Store
	Flush time.Duration
	// OnEntry sees each logged packet (optional).
	OnEntry func(LogEntry)
	// Ready is closed once the NFLOG subscription is in place (optional).
	Ready chan<- struct{}
	// OnFlushError hears about a flush that failed; the observations are
	// kept for the next one.
	OnFlushError func(error)
}

// Watch subscribes to the NFLOG group of the default rules in the target
// namespace, counts every logged packet in m, and writes the counts to the
// store as observations until ctx ends, then flushes a last time.
func Watch(ctx context.Context, t Target, m *Monitor, o WatchOptions) error {
	if o.Flush <= 0 {
		o.Flush = 5 * time.Second
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		errc <- ListenLog(ctx, t, o.Group, o.Ready, func(e LogEntry) {
			m.Add(e)
			if o.OnEntry != nil {
				o.OnEntry(e)
			}
		})
	}()
	flush := func() {
		if o.Store == nil {
			return
		}
		obs, minutes := m.Take()
		if len(obs) == 0 && len(minutes) == 0 {
			return
		}
		if err := o.Store.AddObservations(obs, minutes); err != nil {
			m.GiveBack(obs, minutes)
			if o.OnFlushError != nil {
				o.OnFlushError(err)
			}
		}
	}
	tick := time.NewTicker(o.Flush)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			flush()
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		case <-tick.C:
			flush()
		}
	}
}

// Collector exposes the monitor's counts and the kernel's view of our
// table as Prometheus metrics. Destinations and users are the top K by
// packets; the rest is folded into destination="other" (user="other").
type Collector struct {
	Monitor  *Monitor
	Target   Target
	Table    string
	Store    *store.Store // generations and DNS names (optional)
	UserName func(uint32) string
	TopK     int
}

var (
	descDenied = prometheus.NewDesc("egress_denied_packets_total",
		"Packets the default rule logged (action drop or audit), by user and destination; the top destinations, the rest as destination=\"other\".",
		[]string{"action", "uid", "user", "proto", "destination", "port", "hostname"}, nil)
	descDeniedUser = prometheus.NewDesc("egress_denied_packets_by_user_total",
		"Packets the default rule logged, by user; the top users, the rest as user=\"other\".",
		[]string{"action", "uid", "user"}, nil)
	descEntries = prometheus.NewDesc("egress_monitor_log_entries_total",
		"NFLOG messages the monitor received.", nil, nil)
	descPresent = prometheus.NewDesc("egress_table_present",
		"1 when our table is installed.", []string{"table"}, nil)
	descMode = prometheus.NewDesc("egress_table_mode",
		"1 for the mode of our table: audit, enforce or staged.", []string{"table", "mode"}, nil)
	descElements = prometheus.NewDesc("egress_set_elements",
		"Elements of our table's sets.", []string{"table", "set"}, nil)
	descRulePackets = prometheus.NewDesc("egress_rule_packets_total",
		"Packet counter of each rule of our table, by rule comment.", []string{"table", "rule"}, nil)
	descRuleBytes = prometheus.NewDesc("egress_rule_bytes_total",
		"Byte counter of each rule of our table, by rule comment.", []string{"table", "rule"}, nil)
	descKernelDropped = prometheus.NewDesc("egress_kernel_dropped_packets_total",
		"Packets the default rules dropped, from the kernel's counters.", []string{"table"}, nil)
	descKernelAudited = prometheus.NewDesc("egress_kernel_audited_packets_total",
		"Packets the default rules logged without dropping, from the kernel's counters.", []string{"table"}, nil)
	descGeneration = prometheus.NewDesc("egress_generation",
		"Number of the current generation of our table.", []string{"table"}, nil)
	descLastApply = prometheus.NewDesc("egress_last_apply_timestamp_seconds",
		"When the current generation was applied.", []string{"table"}, nil)
)

// Describe sends the descriptions of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDenied, descDeniedUser, descEntries, descPresent, descMode, descElements,
		descRulePackets, descRuleBytes, descKernelDropped, descKernelAudited, descGeneration, descLastApply} {
		ch <- d
	}
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

// Collect reads the monitor, the kernel and the store.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	k := c.TopK
	if k <= 0 {
		k = 20
	}
	counter := prometheus.CounterValue
	if c.Monitor != nil {
		top, other, entries := c.Monitor.Top(k)
		var names map[netip.Addr][]string
		if c.Store != nil {
			ips := make([]netip.Addr, len(top))
			for i, t := range top {
				ips[i] = t.IP
			}
			names, _ = c.Store.NamesOf(ips)
		}
		for _, t := range top {
			host := ""
			if n := names[t.IP]; len(n) > 0 {
				host = n[0]
			}
			ch <- prometheus.MustNewConstMetric(descDenied, counter, float64(t.Hits), t.Action,
				strconv.FormatUint(uint64(t.UID), 10), c.user(t.UID), ProtoName(t.Proto), t.IP.String(), strconv.Itoa(int(t.Port)), host)
		}
		for action, n := range other {
			ch <- prometheus.MustNewConstMetric(descDenied, counter, float64(n), action, "", "other", "", "other", "", "")
		}
		users, otherUsers := c.Monitor.ByUser(k)
		for _, u := range users {
			ch <- prometheus.MustNewConstMetric(descDeniedUser, counter, float64(u.Hits), u.Action, strconv.FormatUint(uint64(u.UID), 10), c.user(u.UID))
		}
		for action, n := range otherUsers {
			ch <- prometheus.MustNewConstMetric(descDeniedUser, counter, float64(n), action, "", "other")
		}
		ch <- prometheus.MustNewConstMetric(descEntries, counter, float64(entries))
	}
	st, err := ReadStatus(c.Target, c.Table, false)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descPresent, err)
	} else {
		present := 0.0
		if st.Present {
			present = 1
			ch <- prometheus.MustNewConstMetric(descMode, prometheus.GaugeValue, 1, c.Table, string(st.Mode))
			for _, s := range st.Sets {
				ch <- prometheus.MustNewConstMetric(descElements, prometheus.GaugeValue, float64(s.Elements), c.Table, s.Name)
			}
			for _, r := range st.Counters {
				ch <- prometheus.MustNewConstMetric(descRulePackets, counter, float64(r.Packets), c.Table, r.Rule)
				ch <- prometheus.MustNewConstMetric(descRuleBytes, counter, float64(r.Bytes), c.Table, r.Rule)
			}
			ch <- prometheus.MustNewConstMetric(descKernelDropped, counter, float64(st.Dropped.Packets), c.Table)
			ch <- prometheus.MustNewConstMetric(descKernelAudited, counter, float64(st.Audited.Packets), c.Table)
		}
		ch <- prometheus.MustNewConstMetric(descPresent, prometheus.GaugeValue, present, c.Table)
	}
	if c.Store != nil {
		if gens, cur, err := History(c.Store, c.Target, c.Table); err == nil && cur != 0 {
			for _, g := range gens {
				if g.N == cur {
					ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(g.N), c.Table)
					ch <- prometheus.MustNewConstMetric(descLastApply, prometheus.GaugeValue, float64(g.Time.Unix()), c.Table)
				}
			}
		}
	}
}
