package monitor

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// floodEntry is the i-th of a flood of UDP drops to distinct destinations:
// 16 addresses times 65535 ports, as the issue measured.
func floodEntry(i int, at time.Time) LogEntry {
	uid := uint32(1000 + i%3)
	return LogEntry{Time: at, Action: ObsActionDrop, UID: &uid, Proto: plan.ProtoUDP,
		Dst: netip.AddrFrom4([4]byte{203, 0, 113, byte(i / 65535)}), Port: uint16(1 + i%65535)}
}

// TestMonitorIsBoundedUnderAFlood: a million distinct denied destinations,
// and one destination that gets a packet in every 100. The monitor's
// structures stay within their bounds (and its heap far below the 64 MiB
// goal), the totals stay exact, the heavy destination is on top with its
// true count, and every packet is either in a flushed observation or
// counted as unrecorded.
func TestMonitorIsBoundedUnderAFlood(t *testing.T) {
	const n = 1_000_000
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	heavyUID := uint32(4242)
	heavy := LogEntry{Action: ObsActionDrop, UID: &heavyUID, Proto: plan.ProtoTCP, Dst: netip.MustParseAddr("192.0.2.7"), Port: 443}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	m := NewMonitor()
	var flushed []store.Observation
	var unrecorded store.Unrecorded
	for i := range n {
		e := floodEntry(i, at.Add(time.Duration(i)*time.Millisecond))
		if i%100 == 0 {
			heavy.Time = e.Time
			m.Add(heavy)
		}
		m.Add(e)
		if i%250_000 == 249_999 { // a flush now and then
			b := m.Take()
			if len(b.Observations) > DefaultPendingCapacity {
				t.Fatalf("a flush of %d observations, bound %d", len(b.Observations), DefaultPendingCapacity)
			}
			flushed = append(flushed, b.Observations...)
			unrecorded = unrecorded.Plus(b.Unrecorded)
			if i == 249_999 {
				m.GiveBack(b) // a failed flush comes back within the bounds
				flushed = flushed[:0]
				unrecorded = store.Unrecorded{}
			}
		}
	}
	st := m.Stats()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("after %d distinct destinations: %d top entries (bound %d), %d pending (bound %d), heap +%d KiB, flushed %d observations, unrecorded %+v",
		n, st.Tracked, st.TrackedCap, st.Pending, st.PendingCap, heap>>10, len(flushed), unrecorded)
	if st.Tracked > st.TrackedCap || st.Pending > st.PendingCap || st.TrackedCap > DefaultTopCapacity+2*DefaultUserCapacity {
		t.Errorf("structures past their bounds: %+v", st)
	}
	if heap > 32<<20 {
		t.Errorf("the monitor's heap grew by %d MiB for a flood of distinct destinations", heap>>20)
	}
	total := uint64(n + n/100)
	if st.Entries != total {
		t.Errorf("entries %d, want %d", st.Entries, total)
	}
	top, other, _ := m.Top(3)
	if len(top) == 0 || top[0].IP != heavy.Dst || top[0].UID != heavyUID || top[0].Hits-top[0].Err > uint64(n/100) || top[0].Hits < uint64(n/100) {
		t.Errorf("top %+v, want 192.0.2.7:443 for uid 4242 with %d packets", top, n/100)
	}
	var sum uint64
	for _, c := range top {
		sum += c.Hits
	}
	if sum+other[ObsActionDrop] != total {
		t.Errorf("top %d + other %d != %d", sum, other[ObsActionDrop], total)
	}
	// Conservation: the flushes of the last 750,000 entries (and the
	// 250,000 given back) hold every packet or count it as unrecorded.
	b := m.Take()
	flushed = append(flushed, b.Observations...)
	unrecorded = unrecorded.Plus(b.Unrecorded)
	var hits uint64
	for _, o := range flushed {
		hits += o.Hits
	}
	if hits+unrecorded.Drop != total {
		t.Errorf("flushed %d + unrecorded %d packets, want %d", hits, unrecorded.Drop, total)
	}
	if st.UnrecordedDrop < unrecorded.Drop {
		t.Errorf("the monitor's unrecorded count %d does not say what the bound left out (%d)", st.UnrecordedDrop, unrecorded.Drop)
	}
}

// TestMonitorMinutesAreBounded: per-minute counts kept through failed
// flushes stop at a week; the rest is counted.
func TestMonitorMinutesAreBounded(t *testing.T) {
	m := NewMonitorWith(MonitorOptions{PendingCapacity: 4})
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for i := range maxMinutes + 100 {
		m.Add(floodEntry(i, at.Add(time.Duration(i)*time.Minute)))
	}
	b := m.Take()
	if len(b.Minutes) != maxMinutes || m.Stats().LostMinutes != 100 || len(b.Observations) != 4 {
		t.Errorf("%d minutes kept (bound %d), %d lost, %d observations", len(b.Minutes), maxMinutes, m.Stats().LostMinutes, len(b.Observations))
	}
	if _, ok := b.Minutes[at.Unix()/60]; ok {
		t.Error("the oldest minute was kept, a newer one dropped")
	}
}
