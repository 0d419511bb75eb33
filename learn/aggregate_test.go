package learn

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

func attempt(uid uint32, ip string, port uint16, hits uint64, at time.Time, comm string) Attempt {
	return Attempt{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port, Hits: hits, First: at, Last: at, Comm: comm, CgroupID: 1}
}

// TestTakeIsInStoreOrder: a flush writes flows in the store's key order
// (bbolt inserts in order fastest): the order take gives is the order the
// store reads back.
func TestTakeIsInStoreOrder(t *testing.T) {
	a := newAggregator(Filter{}, func(uint64) string { return "/x" }, nil)
	now := time.Now()
	for _, ip := range []string{"2001:db8::1", "10.0.0.2", "::1", "10.0.0.1", "fe80::1"} {
		for _, uid := range []uint32{70000, 1, 0} {
			a.add(attempt(uid, ip, 443, 1, now, "a"))
			a.add(attempt(uid, ip, 80, 1, now, "a"))
		}
	}
	tk := a.take()
	flows := tk.chunk(0, len(tk.flows))
	st, err := store.Create(filepath.Join(t.TempDir(), "o.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(&store.Batch{Flows: flows}); err != nil {
		t.Fatal(err)
	}
	back, err := st.Flows()
	if err != nil {
		t.Fatal(err)
	}
	for i := range back {
		if back[i].FlowKey != flows[i].FlowKey {
			t.Fatalf("position %d: take gave %+v, the store reads %+v", i, flows[i].FlowKey, back[i].FlowKey)
		}
	}
}

func TestAggregatorMergesAndFilters(t *testing.T) {
	a := newAggregator(Filter{Loopback: true, Ports: []uint16{22}, Users: []uint32{99},
		Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		func(uint64) string { return "/svc" }, []store.FlowKey{{UID: 1, Proto: 6, IP: netip.MustParseAddr("10.0.0.9"), Port: 443}})
	t0 := time.Unix(1000, 0)
	a.add(attempt(1, "10.0.0.1", 443, 2, t0, "curl"))
	a.add(attempt(1, "10.0.0.1", 443, 3, t0.Add(time.Second), "wget"))
	a.add(attempt(1, "10.0.0.9", 443, 1, t0, "curl")) // known from the store: not new
	for _, ig := range []Attempt{
		attempt(1, "127.0.0.1", 443, 1, t0, "x"), attempt(1, "::1", 443, 1, t0, "x"),
		attempt(1, "10.0.0.1", 22, 1, t0, "x"), attempt(99, "10.0.0.1", 443, 1, t0, "x"),
		attempt(1, "192.0.2.77", 443, 1, t0, "x"),
	} {
		a.add(ig)
	}
	st := a.status(t0.Add(2 * time.Second))
	if st.Events != 6 || st.Ignored != 5 || st.Flows != 2 || st.NewLastMinute != 1 {
		t.Errorf("status %+v", st)
	}
	tk := a.take()
	flows := tk.chunk(0, len(tk.flows))
	if len(flows) != 2 {
		t.Fatalf("flows %+v", flows)
	}
	f := flows[0]
	if f.Hits != 5 || !f.FirstSeen.Equal(t0) || !f.LastSeen.Equal(t0.Add(time.Second)) ||
		len(f.Processes) != 2 || len(f.Cgroups) != 1 || f.Cgroups[0] != "/svc" {
		t.Errorf("merged flow %+v", f)
	}
	// A failed flush gives the flows back; they add up with new hits.
	a.giveBack(tk.flows, nil)
	a.add(attempt(1, "10.0.0.1", 443, 1, t0.Add(2*time.Second), "curl"))
	tk = a.take()
	if got := tk.chunk(0, 1)[0]; got.Hits != 6 {
		t.Errorf("after give back: %+v", got)
	}
}
