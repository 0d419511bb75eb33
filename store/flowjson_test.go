package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// fastFlow decodes data as one flow with the fast reader, falling back to
// encoding/json as the store does.
func fastFlow(data []byte) (Flow, error) {
	r := jreader{b: data, ok: true}
	var f Flow
	r.flow(&f, false)
	if r.end() {
		return f, nil
	}
	var g Flow
	err := json.Unmarshal(data, &g)
	return g, err
}

func flowJSONSeeds() [][]byte {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	full := Flow{FlowKey: FlowKey{UID: 1000, Proto: 6, IP: netip.MustParseAddr("2001:db8::1"), Port: 443}, Hits: 42,
		FirstSeen: t0, LastSeen: t0.Add(time.Hour), Hostnames: []string{"a.example", "b.example"}, Processes: []string{"curl"},
		Comms:   []ProcessComm{{Exe: "/usr/bin/curl", Comm: "fetch"}, {Exe: "/bin/sh", Comm: "job"}},
		Cgroups: []string{"/system.slice/x.service"}, Presented: []string{"a.example"}, Dropped: 3,
		Approval: Approval{Approved: 7, ApprovedAt: t0, ApprovedNames: []string{"a.example"}, Retired: t0.Add(2 * time.Hour)}}
	rec := flowRecord{Flow: full}
	fullJSON, _ := json.Marshal(full)
	recJSON, _ := json.Marshal(&rec)
	exp, _ := json.Marshal(Export{Format: ExportFormat, Host: "h1", Exported: t0, Users: map[uint32]string{1000: "alice", 0: "root"},
		Flows: []Flow{full, {FlowKey: FlowKey{UID: 0, Proto: 17, IP: netip.MustParseAddr("192.0.2.1"), Port: 53}, Hits: 1}}})
	return [][]byte{fullJSON, recJSON, exp,
		[]byte(`{"uid":1,"proto":6,"ip":"10.0.0.1","port":80,"hits":1,"first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00+02:00"}`),
		[]byte(` { "hits" : 1 , "hostnames" : [ ] , "processes":["a\u00e9"] } `),
		[]byte(`{"hits":01}`), []byte(`{"hits":-1}`), []byte(`{"hits":1.5}`), []byte(`{"proto":256}`), []byte(`{"UID":5}`),
		[]byte(`{"hits":null}`), []byte(`{"hostnames":["\xff"]}`), []byte(`{"ip":"1.2.3.4%eth0"}`), []byte(`{"ip":""}`),
		[]byte(`{"first_seen":"2026-13-01T00:00:00Z"}`), []byte(`{"hits":1,"hits":2}`), []byte(`{"unknown":1}`),
		[]byte(`{"format":"egress-baseline/1","users":{"007":"x","1":"y"},"flows":[]}`),
		[]byte(`{"users":{"1":"a"},"users":{"2":"b"},"flows":[{"hits":1}],"flows":[{"hits":2}]}`),
		[]byte(`{}`), []byte(`[]`), []byte(`{"hits":1}x`), []byte(``),
		[]byte(`{"comms":[]}`), []byte(`{"comms":[{}]}`), []byte(`{"comms":[{"exe":"a","comm":"b"}],"comms":[{"exe":"c"}]}`),
		[]byte(`{"comms":[{"Exe":"a"}]}`), []byte(`{"comms":[null]}`), []byte(`{"comms":null}`), []byte(`{"comms":[{"exe":"a","x":1}]}`)}
}

// FuzzFlowJSON: the fast reader of flows, flow records and exports gives
// exactly what encoding/json gives, and fails where it fails.
func FuzzFlowJSON(f *testing.F) {
	for _, s := range flowJSONSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFlowJSON(t, data)
	})
}

func checkFlowJSON(t *testing.T, data []byte) {
	t.Helper()
	var want Flow
	werr := json.Unmarshal(data, &want)
	got, gerr := fastFlow(data)
	same(t, "flow", data, got, gerr, want, werr)

	var wantRec, gotRec flowRecord
	werr = json.Unmarshal(data, &wantRec)
	gerr = decodeFlowRecord([]byte("k"), data, &gotRec)
	same(t, "record", data, gotRec, gerr, wantRec, werr)

	var wantExp, gotExp Export
	werr = json.Unmarshal(data, &wantExp)
	gerr = DecodeExport(data, &gotExp)
	same(t, "export", data, gotExp, gerr, wantExp, werr)
}

func same(t *testing.T, what string, data []byte, got any, gerr error, want any, werr error) {
	t.Helper()
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%s %q: error %v, encoding/json %v", what, data, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s %q:\n got  %s\n want %s", what, data, fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want))
	}
}

// TestFlowJSONSeeds runs the fuzz seeds, and checks that the fast reader
// takes the JSON the store writes (no fallback).
func TestFlowJSONSeeds(t *testing.T) {
	for _, s := range flowJSONSeeds() {
		checkFlowJSON(t, s)
	}
	seeds := flowJSONSeeds()
	for i, s := range seeds[:3] {
		r := jreader{b: s, ok: true}
		switch i {
		case 0:
			r.flow(&Flow{}, false)
		case 1:
			r.flow(&Flow{}, true)
		case 2:
			r.export(&Export{})
		}
		if !r.end() {
			t.Errorf("seed %d: the fast reader gave up at byte %d of %s", i, r.i, s)
		}
	}
}
