package monitor

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// TestByService: packets whose sender's service is known are counted by
// user and service, per action; packets of no known service are not;
// past the bound (space-saving: a newcomer takes the lightest pair's
// place, its count overstated by at most Err), the top and "other" still
// add up to every packet.
func TestByService(t *testing.T) {
	m := NewMonitorWith(MonitorOptions{UserCapacity: 4})
	add := func(uid uint32, action, svc string, n int) {
		for range n {
			m.Add(LogEntry{Action: action, UID: &uid, Proto: plan.ProtoTCP, Dst: netip.MustParseAddr("192.0.2.1"), Port: 443, Service: svc})
		}
	}
	add(0, ObsActionDrop, "system.slice/backup.service", 5)
	add(0, ObsActionDrop, "system.slice/pay.service", 2)
	add(1000, ObsActionAudit, "system.slice/pay.service", 3)
	add(0, ObsActionDrop, "", 7) // no service known
	top, other := m.ByService(10)
	want := []ServiceCount{
		{ObsActionDrop, 0, "system.slice/backup.service", 5, 0},
		{ObsActionAudit, 1000, "system.slice/pay.service", 3, 0},
		{ObsActionDrop, 0, "system.slice/pay.service", 2, 0},
	}
	if fmt.Sprint(top) != fmt.Sprint(want) || other[ObsActionDrop] != 0 || other[ObsActionAudit] != 0 {
		t.Fatalf("by service %+v, other %v", top, other)
	}
	for i := range 10 {
		add(2000, ObsActionDrop, fmt.Sprintf("system.slice/s%d.service", i), 1)
	}
	top, other = m.ByService(10)
	var sum uint64
	for _, c := range top {
		if c.Action == ObsActionDrop {
			sum += c.Hits
		}
	}
	if len(top) > 4+1 || top[0].Service != "system.slice/backup.service" || sum+other[ObsActionDrop] != 5+2+10 {
		t.Errorf("past the bound: %+v, other %v", top, other)
	}
	if st := m.Stats(); st.Tracked > st.TrackedCap {
		t.Errorf("tracked %d over %d", st.Tracked, st.TrackedCap)
	}
}
