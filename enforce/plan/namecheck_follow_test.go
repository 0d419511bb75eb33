package plan_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestFollowNameChecks: the follower's addresses are name-checked against
// each user's TCP follow rules per port, in that user's mode; UDP rules
// and a name check that is off give none; generate shows them.
func TestFollowNameChecks(t *testing.T) {
	flows := []store.Flow{pflow(3000, plan.ProtoTCP, "192.0.2.10", 443, 3, tp)}
	follow := &plan.FollowOptions{Mode: plan.FollowBoth, Names: []plan.NameRule{
		{UID: 1000, Name: "name1.lab", Proto: plan.ProtoTCP, Port: 443},
		{UID: 1000, Name: "*.wild.lab", Proto: plan.ProtoTCP, Port: 443},
		{UID: 1000, Name: "name1.lab", Proto: plan.ProtoTCP, Port: 80},
		{UID: 1000, Name: "quic.lab", Proto: plan.ProtoUDP, Port: 443},
		{UID: 2000, Name: "www.lab", Proto: plan.ProtoTCP, Port: 443},
	}}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, NameCheck: plan.NameCheckEnforce, AuditUIDs: []uint32{2000}, Follow: follow, Now: tp})
	got := p.FollowNameChecks()
	want := []plan.NameChecked{
		{UID: 1000, Proto: plan.ProtoTCP, Port: 443, Mode: "enforce", Names: []string{"*.wild.lab", "name1.lab"}, Followed: true},
		{UID: 1000, Proto: plan.ProtoTCP, Port: 80, Mode: "enforce", Names: []string{"name1.lab"}, Followed: true},
		{UID: 2000, Proto: plan.ProtoTCP, Port: 443, Mode: "audit", Names: []string{"www.lab"}, Followed: true},
	}
	if len(got) != len(want) {
		t.Fatalf("follow name checks %+v", got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.UID != w.UID || g.IP.IsValid() || g.Port != w.Port || g.Mode != w.Mode || !g.Followed || !slices.Equal(g.Names, w.Names) {
			t.Errorf("follow name check %d: %+v, want %+v", i, g, w)
		}
	}
	var b strings.Builder
	if err := p.Text(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"# Name check enforce of followed addresses:", "#   uid 1000 tcp followed:443 enforce: *.wild.lab name1.lab\n",
		"#   uid 2000 tcp followed:443 audit: www.lab\n"} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("the script lacks %q:\n%s", line, b.String())
		}
	}
	if p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, Follow: follow, Now: tp}); len(p.FollowNameChecks()) != 0 {
		t.Errorf("name check off: %+v", p.FollowNameChecks())
	}
}
