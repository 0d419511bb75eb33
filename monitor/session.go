package monitor

import (
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// Heartbeat is how often a watch with nothing to record still writes its
// run to the store: the run's end, which says the monitor was listening
// until then, lags the truth by at most this and a flush.
const Heartbeat = 30 * time.Second

// RunSpan is the longest period one record of a run covers: a long run
// is recorded as a record an hour, so that what it lost is placed within
// the hour it was lost in.
const RunSpan = time.Hour

// session is the monitor's run as the store records it (store.Watch):
// when it started listening, its last flush, and what it could not
// record: packets whose destination did not fit, NFLOG messages lost,
// and packets the log's rate limits kept out of the log, which the
// kernel's counters tell.
type session struct {
	w       store.Watch
	status  func() (*nft.Status, error) // nil: the counters are not read
	gaps    [2]uint64                   // audited and dropped packets not logged, at the last read
	written time.Time                   // the last flush that wrote the run
	lost    uint64                      // messages lost before the current record
}

func newSession(t nft.Target, group uint16, start time.Time, status func() (*nft.Status, error)) *session {
	start = start.UTC()
	return &session{w: store.Watch{Start: start, End: start, Target: t.Path(), Group: group, Counters: status != nil}, status: status}
}

// due says whether a flush at now must write the run even with nothing
// else to record: its first flush, and then every Heartbeat.
func (s *session) due(now time.Time) bool {
	return s.w.ID == 0 || now.Sub(s.written) >= Heartbeat
}

// update brings the run up to a flush at now: its end, what the socket
// lost (the monitor counts since it started) and the unlogged packets
// since the last read of the counters. A read that fails leaves the run
// without counters (their packets unknown) and is returned.
func (s *session) update(now time.Time, st MonitorStats, final bool) error {
	lost := max(st.LostLogs, st.ReceiveErrors)
	if s.w.ID != 0 && now.Sub(s.w.Start) >= RunSpan {
		// The next record starts where this one's last flush ended.
		s.lost += s.w.LostLogs
		s.w = store.Watch{Start: s.w.End, Target: s.w.Target, Group: s.w.Group, Counters: s.status != nil}
	}
	s.w.End, s.w.Finished = now.UTC(), final
	s.w.LostLogs = lost - s.lost
	if s.status == nil {
		return nil
	}
	t, err := s.status()
	if err != nil {
		s.w.Counters = false
		return err
	}
	gaps, known := unlogged(t)
	if !known {
		s.w.Counters = false
	}
	s.w.UnloggedAudit += grown(s.gaps[0], gaps[0])
	s.w.UnloggedDrop += grown(s.gaps[1], gaps[1])
	s.gaps = gaps
	return nil
}

// unlogged is what the default rules of a table counted and did not log,
// audited and dropped; known is false when a rule that limits its log has
// no counter after the limit (a plan from before drop_log_rate) and
// counted packets.
func unlogged(st *nft.Status) (gaps [2]uint64, known bool) {
	known = true
	for i, c := range []struct {
		all    nft.Counter
		logged *nft.Counter
		limits bool
	}{{st.Audited, st.AuditsLogged, true}, {st.Dropped, st.DropsLogged, false}} {
		switch {
		case c.logged != nil && c.all.Packets >= c.logged.Packets:
			gaps[i] = c.all.Packets - c.logged.Packets
		case c.logged == nil && c.limits && c.all.Packets > 0:
			known = false
		}
	}
	return gaps, known
}

// grown is how much a count went up from before to now; a count that went
// down started again (a new table: counters restart at each apply).
func grown(before, now uint64) uint64 {
	if now >= before {
		return now - before
	}
	return now
}

// StatusOf reads a table's counters for a watch (WatchOptions.Status).
func StatusOf(k nft.Kernel, table string) func() (*nft.Status, error) {
	if table == "" {
		table = plan.DefaultTable
	}
	return func() (*nft.Status, error) { return k.Status(table, false) }
}
