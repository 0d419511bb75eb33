package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// bigExport is an export of n flows, each with hostnames names(i), as
// egress-learn export writes it (no white space).
func bigExport(t *testing.T, n int, names func(i int) []string) []byte {
	t.Helper()
	e := Export{Format: ExportFormat, Host: "h1", Exported: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), Users: map[uint32]string{1000: "app"}}
	for i := range n {
		e.Flows = append(e.Flows, Flow{
			FlowKey: FlowKey{UID: 1000 + uint32(i%7), Proto: 6, IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 443},
			Hits:    uint64(i + 1), FirstSeen: e.Exported.Add(-time.Hour), LastSeen: e.Exported,
			Hostnames: names(i), Processes: []string{"java"},
		})
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 2*splitFlows {
		t.Fatalf("export of %d bytes: too small to be read in halves", len(data))
	}
	return data
}

// inHalves says whether the fast reader reads data's flows in halves.
func inHalves(data []byte) bool {
	i := bytes.Index(data, []byte(`"flows":[`))
	r := jreader{b: data, i: i + len(`"flows":[`), ok: true}
	return r.flowsInHalves(&Export{})
}

func checkExport(t *testing.T, data []byte) {
	t.Helper()
	var want, got Export
	werr := json.Unmarshal(data, &want)
	gerr := DecodeExport(data, &got)
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("error %v, encoding/json %v", gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("the export decodes to %d flows, encoding/json to %d, or they differ", len(got.Flows), len(want.Flows))
	}
}

// TestExportInHalves: a large export is read on two cores, and gives what
// encoding/json gives.
func TestExportInHalves(t *testing.T) {
	data := bigExport(t, 6000, func(i int) []string { return []string{fmt.Sprintf("svc%d.example.net", i)} })
	if !inHalves(data) {
		t.Fatal("a large export was not read in halves")
	}
	checkExport(t, data)
}

// TestExportInHalvesGuess: where the "},{" near the middle is inside a
// string, the halves are refused and the flows are read from the start;
// a broken flow in the second half is the error encoding/json gives.
func TestExportInHalvesGuess(t *testing.T) {
	trap := bigExport(t, 6000, func(i int) []string { return []string{fmt.Sprintf("a},{b%d", i), "ok.example"} })
	if inHalves(trap) {
		t.Fatal("the halves were taken at a \"},{\" inside a string")
	}
	checkExport(t, trap)

	good := bigExport(t, 6000, func(i int) []string { return []string{"x.example"} })
	broken := bytes.Clone(good)
	at := bytes.LastIndex(broken, []byte(`"hits":`))
	copy(broken[at:], `"hitz":`)
	if inHalves(broken) {
		t.Fatal("a second half with a broken flow was taken")
	}
	checkExport(t, broken)
	// The same in the first half.
	broken = bytes.Clone(good)
	at = bytes.Index(broken, []byte(`"hits":`))
	copy(broken[at:], `"hitz":`)
	if inHalves(broken) {
		t.Fatal("a first half with a broken flow was taken")
	}
	checkExport(t, broken)
	negative := bytes.Replace(good, []byte(`"hits":5999,`), []byte(`"hits":-5999,`), 1)
	checkExport(t, negative)
	// Indented: no "},{", read from the start.
	var e Export
	if err := json.Unmarshal(good, &e); err != nil {
		t.Fatal(err)
	}
	indented, _ := json.MarshalIndent(e, "", " ")
	checkExport(t, indented)
}

// TestUintAsStrconv: the reader's numbers are strconv.ParseUint's, bounds
// included.
func TestUintAsStrconv(t *testing.T) {
	for _, c := range []struct {
		in   string
		bits int
		ok   bool
	}{
		{"0", 8, true}, {"255", 8, true}, {"256", 8, false}, {"4294967295", 32, true}, {"4294967296", 32, false},
		{"18446744073709551615", 64, true}, {"18446744073709551616", 64, false}, {"99999999999999999999", 64, false},
		{"01", 64, false}, {"1.5", 64, false}, {"", 64, false},
	} {
		r := jreader{b: []byte(c.in + "}"), ok: true}
		v := r.uint(c.bits)
		if r.ok != c.ok {
			t.Errorf("%q (%d bits): ok %v, want %v", c.in, c.bits, r.ok, c.ok)
		}
		if c.ok && fmt.Sprint(v) != c.in {
			t.Errorf("%q: read %d", c.in, v)
		}
	}
}

// TestExportSpansHalvesApart: DecodeExportSpans leaves a large export's
// second half apart (rest), and e.Flows then rest are the flows
// DecodeExport gives, each at its span; a small export's rest is nil.
func TestExportSpansHalvesApart(t *testing.T) {
	data := bigExport(t, 6000, func(i int) []string { return []string{fmt.Sprintf("svc%d.example.net", i)} })
	var whole, e Export
	if err := DecodeExport(data, &whole); err != nil {
		t.Fatal(err)
	}
	spans, rest, err := DecodeExportSpans(data, &e)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) == 0 || len(e.Flows) == 0 {
		t.Fatalf("halves of %d and %d flows, want both read", len(e.Flows), len(rest))
	}
	got := append(e.Flows[:len(e.Flows):len(e.Flows)], rest...)
	if !reflect.DeepEqual(got, whole.Flows) || len(spans) != len(got) {
		t.Fatalf("%d flows (%d spans), DecodeExport gives %d, or they differ", len(got), len(spans), len(whole.Flows))
	}
	for i, sp := range spans {
		var f Flow
		if !DecodeFlowJSON(data[sp.Start:sp.End], &f) || !reflect.DeepEqual(f, got[i]) {
			t.Fatalf("flow %d is not at its span", i)
		}
	}
	one := whole
	one.Flows = whole.Flows[:3]
	small, err := json.Marshal(one)
	if err != nil {
		t.Fatal(err)
	}
	if spans, rest, err := DecodeExportSpans(small, &e); err != nil || rest != nil || len(e.Flows) != 3 || len(spans) != 3 {
		t.Fatalf("a small export: %d flows, %d apart, %d spans (%v), want 3 in e.Flows", len(e.Flows), len(rest), len(spans), err)
	}
}
