package learn

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// streamFlows are n flows of a few users, in no order, some with the
// bytes tabwriter treats specially (tab, newline, vertical tab, form
// feed, 0xff) or wide characters in their names when hostile is set.
func streamFlows(n int, hostile bool) []store.Flow {
	rng := mrand.New(mrand.NewPCG(7, uint64(n)))
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	weird := []string{"a\tb", "x\ny", "v\vw", "f\fg", "e\xffz", "été.example", "ünïcode-long-name.example.org",
		"<b>&amp;", `q"uote\`, "line\u2028sep", "\x7f"}
	var out []store.Flow
	for i := range n {
		var ip netip.Addr
		if rng.IntN(4) == 0 {
			var a [16]byte
			a[0], a[15] = 0x20, byte(rng.IntN(256))
			a[7] = byte(i)
			ip = netip.AddrFrom16(a)
		} else {
			ip = netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), byte(i >> 8), byte(i)})
		}
		f := store.Flow{FlowKey: store.FlowKey{UID: uint32(rng.IntN(3)), Proto: []uint8{6, 17, 1}[rng.IntN(3)], IP: ip, Port: uint16(rng.IntN(3) * 1000)},
			Hits: uint64(rng.IntN(1 << 20)), FirstSeen: now.Add(-time.Duration(rng.IntN(1e6)) * time.Second), LastSeen: now.Add(time.Duration(rng.IntN(1e9))),
			Hostnames: []string{fmt.Sprintf("h%d.example", rng.IntN(1e6))}, Processes: []string{"/usr/bin/curl", "/bin/sh"},
			Cgroups: []string{"/system.slice/a.service", "/system.slice/b" + strings.Repeat("x", rng.IntN(9)) + ".service"}}
		switch rng.IntN(8) {
		case 0:
			f.Hostnames = nil
		case 1:
			f.Presented = []string{"p.example", f.Hostnames[0]}
		case 2:
			f.Approval = store.Approval{Approved: uint64(rng.IntN(5) + 1)}
		case 3:
			f.Comms = []store.ProcessComm{{Exe: "/bin/sh", Comm: "job"}, {Exe: "/bin/sh", Comm: "other"}}
			if hostile && rng.IntN(4) == 0 {
				f.Comms[1].Comm = weird[rng.IntN(len(weird))]
			}
		case 4:
			f.Retired = now.Add(-time.Hour)
			f.LastSeen = now.Add(-2 * time.Hour)
		case 5:
			f.Cgroups = nil
		}
		if hostile && rng.IntN(40) == 0 {
			w := weird[rng.IntN(len(weird))]
			switch rng.IntN(3) {
			case 0:
				f.Hostnames = append(f.Hostnames, w)
			case 1:
				f.Processes = append(f.Processes, w)
			case 2:
				f.Presented = append(f.Presented, w)
			}
		}
		out = append(out, f)
	}
	return out
}

// TestWriteReportSameBytes: the report written as it is made (WriteReport,
// WriteReportFlowsJSON) has the bytes of the rows BuildReport makes,
// written by WriteReportTable and WriteReportJSON, for a few users, a user
// filter, no flows, and names holding the bytes tabwriter treats specially.
func TestWriteReportSameBytes(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	uid := uint32(1)
	names := func(u uint32) string { return []string{"root", "al\tice", "bob"}[u%3] }
	cut := func(c string) string {
		if i := strings.Index(c, ".service"); i > 0 {
			return strings.TrimPrefix(c[:i+len(".service")], "/")
		}
		return ""
	}
	runs := []store.Run{{ID: 1, Start: now.Add(-time.Hour), End: now, Events: 10}}
	conv := []store.Convergence{{UID: 1, User: "x", Flows: 2, LastNew: now.Add(-time.Minute), NewPerDay: []int{1, 2}}}
	for _, tc := range []struct {
		name    string
		flows   []store.Flow
		o       ReportOptions
		hostile bool
	}{
		{"none", nil, ReportOptions{Now: now}, false},
		{"small", streamFlows(50, false), ReportOptions{Now: now, StaleAfter: time.Hour, Service: cut}, false},
		{"chunks", streamFlows(3*reportChunk+17, false), ReportOptions{Now: now, StaleAfter: time.Hour, Service: cut, UserName: names}, false},
		{"one user", streamFlows(5000, false), ReportOptions{Now: now, UID: &uid}, false},
		{"hostile", streamFlows(3*reportChunk, true), ReportOptions{Now: now, Service: cut, UserName: names}, true},
		{"odd times", oddTimes(), ReportOptions{Now: now}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := BuildReport(tc.flows, tc.o)
			var want, got bytes.Buffer
			if err := WriteReportTable(&want, rows, runs, conv, now); err != nil {
				t.Fatal(err)
			}
			if err := WriteReport(&got, tc.flows, tc.o, runs, conv, now); err != nil {
				t.Fatal(err)
			}
			if tc.hostile && !bytes.Contains(want.Bytes(), []byte(`\xff`)) {
				t.Fatal("the hostile flows lost their special bytes (written escaped)")
			}
			sameBytes(t, "table", got.Bytes(), want.Bytes())
			want.Reset()
			got.Reset()
			werr := WriteReportJSON(&want, rows)
			gerr := WriteReportFlowsJSON(&got, tc.flows, tc.o)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("json: error %v, encoding/json's %v", gerr, werr)
			}
			if werr == nil {
				sameBytes(t, "json", got.Bytes(), want.Bytes())
			}
		})
	}
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	n := 0
	for n < min(len(got), len(want)) && got[n] == want[n] {
		n++
	}
	from := max(0, n-200)
	t.Fatalf("%s: %d bytes, want %d; first difference at %d:\ngot:  %q\nwant: %q", what, len(got), len(want), n,
		got[from:min(len(got), n+200)], want[from:min(len(want), n+200)])
}

// oddTimes are flows seen at times JSON writes with fractions, or not at
// all (years past 9999).
func oddTimes() []store.Flow {
	ip := netip.MustParseAddr("192.0.2.1")
	return []store.Flow{
		{FlowKey: store.FlowKey{UID: 1, Proto: 6, IP: ip, Port: 1}, FirstSeen: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), LastSeen: time.Unix(0, 0)},
		{FlowKey: store.FlowKey{UID: 1, Proto: 6, IP: ip, Port: 2}, Hits: 1, LastSeen: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
}
