package learn

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// alignFlows are flows of two users where a row with presented names
// comes before rows whose cells are wider (a longer address, a longer
// name), so that a column block cut at the "presented:" line shows.
func alignFlows(extra func(*store.Flow)) []store.Flow {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	flow := func(uid uint32, ip string, port uint16, names, presented []string) store.Flow {
		f := store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port},
			Hits: 3, FirstSeen: now.Add(-time.Hour), LastSeen: now, Hostnames: names, Presented: presented,
			Processes: []string{"/usr/bin/curl"}}
		return f
	}
	flows := []store.Flow{
		flow(1000, "192.0.2.1", 443, []string{"a.example"}, []string{"a.example", "front.example"}),
		flow(1000, "192.0.2.2", 80, []string{"b.example"}, nil),
		flow(1000, "2001:db8::1234:5678:9abc", 8443, []string{"a-much-longer-name.example.org"}, []string{"a-much-longer-name.example.org"}),
		flow(1000, "2001:db8::ffff:ffff:ffff:ffff", 53, []string{"c.example"}, nil),
		flow(1001, "198.51.100.7", 443, []string{"x.example"}, []string{"y.example"}),
		flow(1001, "2001:db8:1:2:3:4:5:6", 65535, []string{"the-longest-name-of-them-all.example.net"}, nil),
	}
	if extra != nil {
		for i := range flows {
			extra(&flows[i])
		}
	}
	return flows
}

// reportColumnsAligned checks the table of each user as a reader sees it:
// every row's cells start at the offsets (in characters) of the column
// titles, and each "presented:" line follows its row, indented.
func reportColumnsAligned(t *testing.T, report string, wantRows int) {
	t.Helper()
	lines := strings.Split(report, "\n")
	rows, sections := 0, 0
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "  DESTINATION") {
			continue
		}
		sections++
		header := []rune(lines[i])
		var cols []int
		for k := 2; k < len(header); k++ {
			if header[k-1] == ' ' && header[k-2] == ' ' && header[k] != ' ' {
				cols = append(cols, k)
			}
		}
		if len(cols) != reportCells {
			t.Fatalf("header %q: %d columns, want %d", lines[i], len(cols), reportCells)
		}
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "  "); i++ {
			if strings.HasPrefix(lines[i], "    presented: ") {
				if strings.HasPrefix(lines[i-1], "    presented: ") || strings.HasPrefix(lines[i-1], "  DESTINATION") {
					t.Errorf("line %d: %q does not follow a flow row", i, lines[i])
				}
				continue
			}
			rows++
			r := []rune(lines[i])
			for c, x := range cols {
				if x >= len(r) || r[x-1] != ' ' || r[x] == ' ' || (c > 0 && r[x-2] != ' ') {
					t.Errorf("line %d: column %d does not start at offset %d, under its title:\n%s\n%s", i, c+1, x, lines[i-1-rowsBack(lines, i)], lines[i])
					break
				}
			}
		}
		i--
	}
	if rows != wantRows || sections == 0 {
		t.Fatalf("%d rows in %d sections, want %d:\n%s", rows, sections, wantRows, report)
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

// rowsBack is how many lines above line i the column titles are.
func rowsBack(lines []string, i int) int {
	n := 0
	for i-1-n > 0 && !strings.HasPrefix(lines[i-1-n], "  DESTINATION") {
		n++
	}
	return n
}

// TestReportColumnsAlignAfterPresented: a flow's "presented:" line does
// not cut the table of its user in two, in the report the CLI writes
// (WriteReport) and in WriteReportTable, byte for byte the same.
func TestReportColumnsAlignAfterPresented(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		extra func(*store.Flow)
	}{
		{"presented", nil},
		// A tab, a newline or tabwriter's escape byte in a name must not
		// make cells or lines of their own either.
		{"control bytes in names", func(f *store.Flow) {
			if f.Port == 80 || f.Port == 443 {
				f.Processes = append(f.Processes, "/tmp/a\tb\xff")
				f.Hostnames = append(f.Hostnames, "n\nl.example")
				f.Presented = append(f.Presented, "p\v\f.example")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows := alignFlows(tc.extra)
			o := ReportOptions{Now: now}
			var table, stream bytes.Buffer
			if err := WriteReportTable(&table, BuildReport(flows, o), nil, nil, now); err != nil {
				t.Fatal(err)
			}
			if err := WriteReport(&stream, flows, o, nil, nil, now); err != nil {
				t.Fatal(err)
			}
			reportColumnsAligned(t, stream.String(), len(flows))
			if tc.extra != nil && !strings.Contains(stream.String(), `/tmp/a\tb\xff`) {
				t.Errorf("the control bytes are not written escaped:\n%s", stream.String())
			}
			sameBytes(t, "table", stream.Bytes(), table.Bytes())
			if !strings.Contains(stream.String(), "    presented: a.example,front.example") {
				t.Errorf("no presented line:\n%s", stream.String())
			}
		})
	}
}
