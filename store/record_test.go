package store

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// TestFlowRecordLeavesTheKeyOut: a stored flow's value holds no key field,
// and is what versions before the record was a Flow wrote.
func TestFlowRecordLeavesTheKeyOut(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := Flow{FlowKey: FlowKey{UID: 7, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443}, Hits: 3, FirstSeen: at, LastSeen: at,
		Hostnames: []string{"a.example"}, Processes: []string{"curl"}, Dropped: 1, Approval: Approval{Approved: 2, ApprovedAt: at}}
	data, err := json.Marshal(&flowRecord{Flow: f})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"hits":3,"first_seen":"2026-01-02T03:04:05Z","last_seen":"2026-01-02T03:04:05Z","hostnames":["a.example"],"processes":["curl"],"dropped":1,"approved":2,"approved_at":"2026-01-02T03:04:05Z"}`
	if string(data) != want {
		t.Errorf("stored value\n%s\nwant\n%s", data, want)
	}
	var back flowRecord
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if g := back.flow(f.FlowKey); g.Hits != 3 || g.Approved != 2 || g.FlowKey != f.FlowKey || !g.LastSeen.Equal(at) {
		t.Errorf("read back %+v", g)
	}
}
