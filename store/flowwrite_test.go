package store

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// checkFlowRecordWriter: the fast writer writes what json.Marshal writes.
func checkFlowRecordWriter(t *testing.T, rec *flowRecord) {
	t.Helper()
	want, werr := json.Marshal(rec)
	got, gerr := appendFlowRecord([]byte("x"), rec)
	if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got[1:], want) || string(got[:1]) != "x" {
		t.Errorf("flow record %+v:\n got  %s (%v)\n want %s (%v)", rec, got, gerr, want, werr)
	}
}

func TestFlowRecordWriter(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	east := time.FixedZone("x", 5*3600+30*60)
	full := Flow{FlowKey: FlowKey{UID: 1000, Proto: 6, IP: netip.MustParseAddr("2001:db8::1"), Port: 443}, Hits: 42,
		FirstSeen: t0, LastSeen: t0.Add(time.Hour).In(east), Hostnames: []string{"a.example", "b.example"}, Processes: []string{"curl"},
		Comms: []ProcessComm{{Exe: "python3", Comm: "worker"}}, Cgroups: []string{"/system.slice/x.service"}, Presented: []string{"a.example", "fronted.example"}, Dropped: 3,
		Approval: Approval{Approved: 7, ApprovedAt: t0, ApprovedNames: []string{"a.example"}, Retired: t0.Add(2 * time.Hour)}}
	for _, f := range []Flow{
		full, {}, {Hits: 1, FirstSeen: t0},
		{Hostnames: []string{"a<b>&c", `q"uote`, "back\\slash", "tab\t", "é", "\xff", "\u2028"}},
		{Processes: []string{}, Hostnames: []string{""}},
		{FirstSeen: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{FirstSeen: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{LastSeen: t0.In(time.FixedZone("s", 3600+17))},
		{LastSeen: t0.In(time.FixedZone("w", -(23*3600 + 59*60)))},
		{Comms: []ProcessComm{{Exe: "a\nb", Comm: ""}}},
	} {
		checkFlowRecordWriter(t, &flowRecord{Flow: f})
	}
	for _, data := range flowJSONSeeds() {
		var f Flow
		if json.Unmarshal(data, &f) == nil {
			checkFlowRecordWriter(t, &flowRecord{Flow: f})
		}
	}
}

// FuzzFlowRecordWriter: any flow JSON decodes to a flow the fast writer
// writes as json.Marshal does.
func FuzzFlowRecordWriter(f *testing.F) {
	for _, s := range flowJSONSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fl Flow
		if json.Unmarshal(data, &fl) == nil {
			checkFlowRecordWriter(t, &flowRecord{Flow: fl})
		}
	})
}
