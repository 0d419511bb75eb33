package plan_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

func TestNameCheckedElements(t *testing.T) {
	flows := []store.Flow{
		pflow(1000, plan.ProtoTCP, "192.0.2.10", 443, 3, tp, "Name1.Lab.", "bad name\n#", "name1.lab"),
		pflow(1000, plan.ProtoTCP, "192.0.2.11", 443, 3, tp),             // no names: address-only
		pflow(1000, plan.ProtoUDP, "192.0.2.12", 443, 3, tp, "quic.lab"), // not TCP
		pflow(2000, plan.ProtoTCP, "2001:db8::1", 80, 3, tp, "www.lab"),  // another user, IPv6
	}
	follow := &plan.FollowOptions{Mode: plan.FollowBoth, Names: []plan.NameRule{
		{UID: 1000, Name: "extra.lab", Proto: plan.ProtoTCP, Port: 443},
		{UID: 1000, Name: "*.wild.lab", Proto: plan.ProtoTCP, Port: 443},
	}}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, NameCheck: plan.NameCheckEnforce, AuditUIDs: []uint32{2000}, Follow: follow, Now: tp})
	got := p.NameChecks()
	want := []plan.NameChecked{
		{UID: 1000, IP: netip.MustParseAddr("192.0.2.10"), Proto: plan.ProtoTCP, Port: 443, Mode: "enforce", Names: []string{"name1.lab"}},
		{UID: 2000, IP: netip.MustParseAddr("2001:db8::1"), Proto: plan.ProtoTCP, Port: 80, Mode: "audit", Names: []string{"www.lab"}},
	}
	if len(got) != len(want) {
		t.Fatalf("name checks %+v", got)
	}
	for i := range want {
		if got[i].UID != want[i].UID || got[i].IP != want[i].IP || got[i].Port != want[i].Port || got[i].Mode != want[i].Mode || !slices.Equal(got[i].Names, want[i].Names) {
			t.Errorf("name check %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	var b strings.Builder
	if err := p.Text(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, line := range []string{
		"# Name check enforce: 2 elements;",
		"#   uid 1000 tcp 192.0.2.10:443 enforce: name1.lab\n",
		"#   uid 1000 tcp followed:443 enforce: *.wild.lab extra.lab name1.lab\n", // its rules, once
		"#   uid 2000 tcp [2001:db8::1]:80 audit: www.lab\n",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("the script lacks %q:\n%s", line, text)
		}
	}

	// Off, and a table in audit: nothing, or audit only.
	if p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, Now: tp}); len(p.NameChecks()) != 0 || p.NameCheck != "" {
		t.Errorf("name check off: %+v", p.NameChecks())
	}
	for _, c := range plan.Build(flows, plan.Options{Mode: plan.ModeAudit, NameCheck: plan.NameCheckEnforce, Now: tp}).NameChecks() {
		if c.Mode != plan.NameCheckAudit {
			t.Errorf("a table in audit enforces the name check: %+v", c)
		}
	}
}

func TestParseNameCheck(t *testing.T) {
	for in, want := range map[string]string{"": "off", "off": "off", "Audit": "audit", " enforce ": "enforce"} {
		if got, err := plan.ParseNameCheck(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := plan.ParseNameCheck("strict"); err == nil {
		t.Error("strict accepted")
	}
}

// TestNameChecksOfServices: with match user+service a service's element
// is name-checked for its user, once; with match service (any user) it
// holds no uid and stays address-only.
func TestNameChecksOfServices(t *testing.T) {
	f := pflow(1000, plan.ProtoTCP, "192.0.2.10", 443, 3, tp, "name1.lab")
	f.Cgroups = []string{"/system.slice/app.service"}
	for match, want := range map[string]int{plan.MatchUserService: 1, plan.MatchService: 0} {
		p := plan.Build([]store.Flow{f}, plan.Options{Mode: plan.ModeEnforce, NameCheck: plan.NameCheckEnforce, Match: match, Now: tp})
		got := p.NameChecks()
		if len(got) != want {
			t.Errorf("match %s: name checks %+v, want %d", match, got, want)
		}
		if want == 1 && (got[0].UID != 1000 || !slices.Equal(got[0].Names, []string{"name1.lab"})) {
			t.Errorf("match %s: %+v", match, got[0])
		}
	}
}
