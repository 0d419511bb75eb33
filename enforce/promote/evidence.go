package promote

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/egresskit/egress/store"
)

// MonitorEvidence says what the monitor recorded of the quiet period.
type MonitorEvidence struct {
	// Recorded: the monitor recorded the whole period, while a table
	// logged, and attributed every packet it logged.
	Recorded bool `json:"recorded"`
	// Runs are the records of the monitor's runs in the period (a record
	// an hour), From the earliest start and Until the latest end.
	Runs  int        `json:"runs"`
	From  *time.Time `json:"from,omitempty"`
	Until *time.Time `json:"until,omitempty"`
	// Gaps are stretches longer than MaxGap no run covers; NoTable those
	// no table that logs was in place.
	Gaps    []Period `json:"gaps"`
	NoTable []Period `json:"no_table"`
	// Packets of unknown users in the period: logged but not recorded
	// (the monitor's bounds), log messages lost, audited over the audit
	// log's rate limit, and audited packets the per-minute counts hold
	// that no recorded destination accounts for.
	Unrecorded      uint64 `json:"unrecorded"`
	LostLogs        uint64 `json:"lost_logs"`
	UnloggedAudit   uint64 `json:"unlogged_audit"`
	Unattributed    uint64 `json:"unattributed"`
	CountersUnknown bool   `json:"counters_unknown"`
}

// Period is a stretch of time.
type Period struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// JobEvidence says what the scan of the scheduled jobs found.
type JobEvidence struct {
	Scanned bool   `json:"scanned"`
	Error   string `json:"error,omitempty"`
	// Counted are the jobs that run on their own, Unseen those of them
	// the soak has not seen run.
	Counted int `json:"counted"`
	Unseen  int `json:"unseen"`
}

// timeText writes a time for people, in the local zone.
func timeText(t time.Time) string { return t.Local().Format(time.DateTime) }

// monitorEvidence judges the monitor's record of the period and returns
// the reasons it gives against every audited principal.
func (e *evaluation) monitorEvidence() []Reason {
	m := &e.r.Monitor
	m.Gaps, m.NoTable = []Period{}, []Period{}
	since, now := e.r.Since, e.r.Now
	var runs []store.Watch
	for _, w := range e.in.Watches {
		if w.Target == e.o.Target && w.Group == e.in.Plan.LogGroup() && !w.End.Before(since) && !w.Start.After(now) {
			runs = append(runs, w)
		}
	}
	slices.SortFunc(runs, func(a, b store.Watch) int { return a.Start.Compare(b.Start) })
	m.Runs = len(runs)
	for _, w := range runs {
		if m.From == nil || w.Start.Before(*m.From) {
			m.From = &w.Start
		}
		if m.Until == nil || w.End.After(*m.Until) {
			m.Until = &w.End
		}
		m.Unrecorded += w.Unrecorded.Audit
		m.LostLogs += w.LostLogs
		m.UnloggedAudit += w.UnloggedAudit
		m.CountersUnknown = m.CountersUnknown || !w.Counters
	}
	m.Gaps = gaps(runs, since, now)
	m.NoTable = e.noTable()
	m.Unattributed = e.unattributed()
	var out []Reason
	out = append(out, e.gapReasons()...)
	out = append(out, e.lossReasons()...)
	m.Recorded = len(out) == 0
	return out
}

// gaps are the stretches of [since, now] longer than MaxGap that no run
// covers.
func gaps(runs []store.Watch, since, now time.Time) []Period {
	out := []Period{}
	at := since
	for _, w := range runs {
		if w.Start.Sub(at) > MaxGap {
			out = append(out, Period{at, w.Start})
		}
		if w.End.After(at) {
			at = w.End
		}
	}
	if now.Sub(at) > MaxGap {
		out = append(out, Period{at, now})
	}
	return out
}

// noTable are the stretches of the period when no table that logs was in
// place: before the first generation, and while a removal was current.
// A failed generation never took effect.
func (e *evaluation) noTable() []Period {
	out := []Period{}
	since, now := e.r.Since, e.r.Now
	logs, from := false, since
	for _, g := range e.in.Generations {
		if g.State == store.GenFailed || g.Time.After(now) {
			continue
		}
		on := g.Mode != "removed"
		at := g.Time
		if at.Before(since) {
			at = since
		}
		if on != logs {
			if on && at.After(from) {
				out = append(out, Period{from, at})
			}
			logs, from = on, at
		}
	}
	if !logs && now.After(from) {
		out = append(out, Period{from, now})
	}
	return out
}

// unattributed are the audited packets the per-minute counts hold for
// the period when no recorded destination was audited in it.
func (e *evaluation) unattributed() uint64 {
	for _, ob := range e.in.Observations {
		if ob.Kind == store.ObsAudit && !ob.LastSeen.Before(e.r.Since) {
			return 0
		}
	}
	var n uint64
	first, last := e.r.Since.Unix()/60, e.r.Now.Unix()/60
	for m, c := range e.in.Denials {
		if m >= first && m <= last {
			n += c.Audit
		}
	}
	return n
}

// gapReasons: the periods without a record.
func (e *evaluation) gapReasons() []Reason {
	m := &e.r.Monitor
	var out []Reason
	if m.Runs == 0 {
		out = append(out, Reason{Kind: ReasonNoMonitorData, Text: fmt.Sprintf(
			"no monitor data: no run of egress-enforce watch recorded the log of table inet %s (group %d) since %s; run it (egress-enforce-watch.service) through the quiet period",
			e.r.Table, e.in.Plan.LogGroup(), timeText(e.r.Since))})
	} else if len(m.Gaps) > 0 {
		out = append(out, Reason{Kind: ReasonNoMonitorData, Text: "no monitor data " + periodsText(m.Gaps) +
			": egress-enforce watch was not recording then"})
	}
	if len(m.NoTable) > 0 {
		out = append(out, Reason{Kind: ReasonNoTable, Text: "no table logged traffic " + periodsText(m.NoTable) +
			": nothing was audited then"})
	}
	return out
}

// lossReasons: packets of the period the monitor logged, or the kernel
// counted, without a user.
func (e *evaluation) lossReasons() []Reason {
	m := &e.r.Monitor
	var parts []string
	add := func(n uint64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(m.Unrecorded, "audited packet(s) not recorded (the monitor's bounds)")
	add(m.LostLogs, "log message(s) lost")
	add(m.UnloggedAudit, "audited packet(s) over audit_log_rate, never logged (raise it)")
	add(m.Unattributed, "audited packet(s) in the per-minute counts that no recorded destination accounts for")
	var out []Reason
	if len(parts) > 0 {
		out = append(out, Reason{Kind: ReasonMonitorIncomplete, Text: "packets of unknown users in the period: " + strings.Join(parts, ", ")})
	}
	if m.CountersUnknown && m.Runs > 0 {
		out = append(out, Reason{Kind: ReasonMonitorIncomplete, Text: "the monitor did not read the table's counters during the whole period: audited packets over audit_log_rate are unknown"})
	}
	return out
}

// periodsText lists the first periods ("from A to B, from C to D, and N
// more").
func periodsText(ps []Period) string {
	var s []string
	for i, p := range ps {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(ps)-i))
			break
		}
		s = append(s, fmt.Sprintf("from %s to %s", timeText(p.From), timeText(p.To)))
	}
	return strings.Join(s, ", ")
}

// jobEvidence sums the scan of the scheduled jobs; a scan that failed is
// a reason against every audited principal (returned by jobReasons).
func (e *evaluation) jobEvidence() {
	j := &e.r.Jobs
	if e.in.Jobs == nil {
		j.Error = "not scanned"
		if e.in.JobsErr != nil {
			j.Error = e.in.JobsErr.Error()
		}
		return
	}
	j.Scanned = true
	for _, job := range e.in.Jobs.Jobs {
		if !job.Counted {
			continue
		}
		j.Counted++
		if !job.SeenDuringSoak {
			j.Unseen++
			if job.UID == nil {
				e.r.Notes = append(e.r.Notes, fmt.Sprintf("scheduled job %s has not run while learning, and runs as a user this host does not name (%q, or a dynamic one): it keeps no principal in audit",
					job.Name, job.User))
			}
		}
	}
}

// jobReasons: the scheduled jobs of uid the soak has not seen run.
func (e *evaluation) jobReasons(uid uint32) []Reason {
	if e.in.Jobs == nil {
		return []Reason{{Kind: ReasonJobsUnknown, Text: "the scheduled jobs could not be read: " + e.r.Jobs.Error}}
	}
	var out []Reason
	n := 0
	for _, j := range e.in.Jobs.Jobs {
		if !j.Counted || j.SeenDuringSoak || j.UID == nil || *j.UID != uid {
			continue
		}
		if n++; n > maxListed {
			continue
		}
		text := fmt.Sprintf("scheduled job %s (runs as %s) has not run while learning", j.Name, e.name(uid))
		if j.DueBy != nil {
			text += "; keep learning until after " + timeText(*j.DueBy)
		} else {
			text += "; it runs only at boot, or its next run is unknown: reboot while learning, or run it by hand while learning"
		}
		out = append(out, Reason{Kind: ReasonJobNotSeen, Text: text, Job: j.Name, At: j.DueBy})
	}
	if n > maxListed {
		out = append(out, Reason{Kind: ReasonJobNotSeen, Text: fmt.Sprintf("and %d more scheduled job(s) not seen", n-maxListed)})
	}
	return out
}

// byRecent orders newest last-seen first.
func byRecent(a, b Destination) int {
	return cmp.Or(b.LastSeen.Compare(a.LastSeen), a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}
