package store

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestFirstHalfRoom: for flows of about one size, the room for the first
// half's flows is a little over their number (the second half's are then
// moved down a little, not copied into fresh memory).
func TestFirstHalfRoom(t *testing.T) {
	data := bigExport(t, 20000, func(i int) []string { return []string{fmt.Sprintf("svc%d.r%d.example.net", i, i%13)} })
	start := bytes.Index(data, []byte(`"flows":[`)) + len(`"flows":[`)
	mid := start + (len(data)-start)/2
	cut := mid + bytes.Index(data[mid:], []byte("},{")) + 1
	var e Export
	if err := DecodeExport(append(bytes.Clone(data[:cut]), "]}"...), &e); err != nil {
		t.Fatal(err)
	}
	n1 := len(e.Flows)
	room := firstHalfRoom(data[start:cut], 40000)
	if room < n1 || room > n1+n1/20+64 {
		t.Fatalf("room %d for a first half of %d flows: want from %d to %d", room, n1, n1, n1+n1/20+64)
	}
	if got := firstHalfRoom(data[start:cut], 100); got != 99 {
		t.Errorf("room in an array of 100: %d, want 99", got)
	}
	if got := firstHalfRoom([]byte(strings.Repeat("x", 1000)), 100); got != 50 {
		t.Errorf("room for a half with no boundary in an array of 100: %d, want 50", got)
	}
}

func flowsOfPorts(ports ...uint16) []Flow {
	fs := make([]Flow, len(ports))
	for i, p := range ports {
		fs[i] = Flow{FlowKey: FlowKey{Port: p}, Hostnames: []string{fmt.Sprint(p)}}
	}
	return fs
}

func portsOf(fs []Flow) []uint16 {
	out := make([]uint16, len(fs))
	for i := range fs {
		out[i] = fs[i].Port
	}
	return out
}

// TestJoinHalves: the halves read into one array are joined in it, the
// second moved down when the first ended short of its room (what is left
// behind cleared); a half that outgrew its room is appended.
func TestJoinHalves(t *testing.T) {
	read := func(all []Flow, room int, first, second []uint16) ([]Flow, []Flow) {
		flows, rest := all[:0:room], all[room:room]
		flows = append(flows, flowsOfPorts(first...)...)
		rest = append(rest, flowsOfPorts(second...)...)
		return flows, rest
	}
	want := []uint16{1, 2, 3, 4, 5}
	for _, c := range []struct {
		name          string
		room          int
		first, second []uint16
		inPlace       bool
	}{
		{"exact", 3, want[:3], want[3:], true},
		{"short", 5, want[:2], want[2:], true},
		{"first outgrew", 1, want[:3], want[3:], false},
		{"second outgrew", 2, want[:2], want[2:], false},
	} {
		all := make([]Flow, 0, 10)
		if c.name == "second outgrew" {
			all = make([]Flow, 0, 4)
		}
		flows, rest := read(all, c.room, c.first, c.second)
		got := joinHalves(all, flows, rest, c.room)
		if !slices.Equal(portsOf(got), want) {
			t.Errorf("%s: joined %v, want %v", c.name, portsOf(got), want)
		}
		if inAll := &got[0] == &all[:1][0]; inAll != c.inPlace {
			t.Errorf("%s: joined in the array: %v, want %v", c.name, inAll, c.inPlace)
		}
		if c.inPlace {
			for i, f := range all[len(got):cap(all)] {
				if f.Hostnames != nil {
					t.Errorf("%s: flow %d behind the end not cleared: %+v", c.name, len(got)+i, f)
				}
			}
		}
	}
}

// TestExportInHalvesUneven: flows of very different sizes (the room for
// the first half guessed too small or too large) read as encoding/json
// reads them.
func TestExportInHalvesUneven(t *testing.T) {
	for _, c := range []struct {
		name  string
		names func(i int) []string
	}{
		{"large first", func(i int) []string {
			if i < 4000 {
				return []string{strings.Repeat("a", 300) + ".example"}
			}
			return nil
		}},
		{"large last", func(i int) []string {
			if i >= 8000 {
				return []string{strings.Repeat("b", 300) + ".example"}
			}
			return nil
		}},
		{"every 37th", func(i int) []string {
			if i%37 == 0 {
				return slices.Repeat([]string{"c.example"}, 60)
			}
			return []string{"d.example"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := bigExport(t, 12000, c.names)
			if !inHalves(data) {
				t.Fatal("not read in halves")
			}
			checkExport(t, data)
		})
	}
}
