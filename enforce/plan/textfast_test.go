package plan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestElementLinesAsBefore: the element lines and the header's name lines,
// written without fmt, read as fmt wrote them (key, quote, headerText),
// whatever the strings hold.
func TestElementLinesAsBefore(t *testing.T) {
	for _, s := range []string{"hits 3, last 2026-11-30, a.example", `q"uote\b`, "tab\tnl\n", "é\xff", strings.Repeat("x", 200), ""} {
		p := jsonPlan(s, true)
		p.Sets[0].Elements = p.Sets[0].Elements[:len(p.Sets[0].Elements)-1] // no element without an address
		p.Sets[1].Elements[0].IP = netip.MustParseAddr("::ffff:192.0.2.1")
		p.Follow.Rules = append(p.Follow.Rules, NameRule{UID: 3, Name: s, Proto: ProtoUDP, Port: 53, Source: s})
		text := p.String()
		for _, set := range p.Sets {
			for _, e := range set.Elements {
				want := fmt.Sprintf("\t\t\t%s comment %s", fmt.Sprintf("%d . %s . %s . %d", e.UID, addrText(e.IP), ProtoName(e.Proto), e.Port), quote(e.Comment))
				if !strings.Contains(text, want) {
					t.Errorf("comment %q: no line %q in\n%s", s, want, text)
				}
			}
		}
		for _, r := range p.Follow.Rules {
			want := fmt.Sprintf("#   uid %d %s/%d %s (%s)\n", r.UID, ProtoName(r.Proto), r.Port, headerText(r.Name), headerText(r.Source))
			if !strings.Contains(text, want) {
				t.Errorf("name %q: no header line %q", s, want)
			}
		}
	}
}
