//go:build linux

package monitor

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/store"
)

// counters is a table's default-rule counters as a test sets them.
type counters struct {
	audited, auditLogged uint64
	err                  error
}

func (c *counters) status() (*nft.Status, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &nft.Status{Present: true, Audited: nft.Counter{Packets: c.audited}, AuditsLogged: &nft.Counter{Packets: c.auditLogged}}, nil
}

// TestRunRecords: the monitor's run is in the store from its first flush
// on; a flush with nothing to record writes it only once a Heartbeat has
// passed; its end is its last flush; the packets the audit log's limit
// kept out add up across a new table (counters restart at 0); a read of
// the counters that fails leaves the run without them; an hour-long run
// is a record an hour, each with what was lost in it.
func TestRunRecords(t *testing.T) {
	st, err := store.Create(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	c := &counters{audited: 10, auditLogged: 10}
	m := NewMonitor()
	run := newSession(nft.Target{Netns: "x"}, 88, t0, c.status)
	o := WatchOptions{Store: st}
	last := func() store.Watch {
		t.Helper()
		ws, err := st.Watches()
		if err != nil || len(ws) == 0 {
			t.Fatalf("watches %v, %v", ws, err)
		}
		return ws[len(ws)-1]
	}
	flushRun(m, run, o, t0, false)
	if w := last(); w.ID != 1 || !w.Start.Equal(t0) || w.Target != "/run/netns/x" || w.Group != 88 || !w.Counters {
		t.Fatalf("first flush: %+v", w)
	}
	uid := uint32(7)
	m.Add(LogEntry{Time: t0.Add(time.Second), Action: ObsActionAudit, UID: &uid, Proto: 6, Dst: netip.MustParseAddr("192.0.2.1"), Port: 443})
	c.audited = 25 // 10 were logged before; 15 more, 5 of them logged
	c.auditLogged = 15
	flushRun(m, run, o, t0.Add(2*time.Second), false)
	flushRun(m, run, o, t0.Add(3*time.Second), false) // nothing new, no heartbeat due
	if w := last(); !w.End.Equal(t0.Add(2*time.Second)) || w.UnloggedAudit != 10 {
		t.Errorf("after an audited packet: %+v", w)
	}
	c.audited, c.auditLogged = 4, 1 // a new table
	flushRun(m, run, o, t0.Add(2*time.Second+Heartbeat), false)
	if w := last(); !w.End.Equal(t0.Add(2*time.Second+Heartbeat)) || w.UnloggedAudit != 13 {
		t.Errorf("heartbeat: %+v", w)
	}
	m.NoteLost(2)
	c.err = errors.New("injected")
	end := t0.Add(2*time.Second + Heartbeat)
	flushRun(m, run, o, t0.Add(RunSpan+time.Minute), true)
	ws, _ := st.Watches()
	if len(ws) != 2 || !ws[1].Start.Equal(end) || ws[1].Counters || ws[1].LostLogs != 2 || !ws[1].Finished ||
		ws[0].LostLogs != 0 || !ws[0].Counters || ws[0].Finished {
		t.Errorf("after an hour: %+v", ws)
	}
}

// TestUnlogged: what the counters say the logs left out; a table from
// before drop_log_rate has no counter after its audit log's limit, so its
// audited packets leave the unlogged ones unknown.
func TestUnlogged(t *testing.T) {
	st := &nft.Status{Audited: nft.Counter{Packets: 9}, AuditsLogged: &nft.Counter{Packets: 4},
		Dropped: nft.Counter{Packets: 3}, DropsLogged: &nft.Counter{Packets: 3}}
	if g, ok := unlogged(st); g != [2]uint64{5, 0} || !ok {
		t.Errorf("unlogged %v %v", g, ok)
	}
	old := &nft.Status{Audited: nft.Counter{Packets: 9}, Dropped: nft.Counter{Packets: 3}}
	if _, ok := unlogged(old); ok {
		t.Error("an audit log without its second counter is known")
	}
	if _, ok := unlogged(&nft.Status{Dropped: nft.Counter{Packets: 3}}); !ok {
		t.Error("a drop rule without a limit logs every drop")
	}
}
