package plan

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// jsonPlan is a plan with names, users, comments and hosts made of s, and
// name rules: what Plan.JSON writes by hand.
func jsonPlan(s string, follow bool) *Plan {
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	flows := []store.Flow{
		{FlowKey: store.FlowKey{UID: 1000, Proto: ProtoTCP, IP: netip.MustParseAddr("192.0.2.10"), Port: 443}, Hits: 3, LastSeen: t0, Hostnames: []string{"a.example", s}},
		{FlowKey: store.FlowKey{UID: 0, Proto: ProtoUDP, IP: netip.MustParseAddr("2001:db8::1"), Port: 53}, Hits: 1, LastSeen: t0},
		{FlowKey: store.FlowKey{UID: 7, Proto: ProtoTCP, IP: netip.MustParseAddr("198.51.100.7"), Port: 80}, Hits: 9, LastSeen: t0, Hostnames: []string{s + ".example"}},
	}
	o := Options{Mode: ModeEnforce, Now: t0, Source: s, UserName: func(u uint32) string { return s },
		Hosts: map[store.FlowKey][]string{flows[0].FlowKey: {"h1", s}}, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		NameCheck: NameCheckEnforce}
	if follow {
		o.Follow = &FollowOptions{Mode: FollowBoth, Names: []NameRule{{UID: 5, Name: "*.s3.example", Proto: ProtoTCP, Port: 443}}}
	}
	p := Build(flows, o)
	p.Sets[0].Elements = append(p.Sets[0].Elements, Element{UID: 1, Comment: s, User: s, Names: []string{s, "b.example"}}) // no address: ""
	p.Sets[1].Elements[0].IP = netip.MustParseAddr("fe80::1%" + "eth0")
	return p
}

func checkJSON(t *testing.T, p *Plan) {
	t.Helper()
	got, err := p.JSON()
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Plan.JSON differs from json.Marshal:\n got  %s\n want %s", got, want)
	}
}

// TestPlanJSONIsEncodingJSON: Plan.JSON writes what json.Marshal writes,
// with and without name rules, with empty and missing lists, and with
// strings that need escapes.
func TestPlanJSONIsEncodingJSON(t *testing.T) {
	for _, s := range []string{"plain", `q"uote\back<>&`, "tab\tnl\n\x01\b\f", "é\u2028\xff", ""} {
		checkJSON(t, jsonPlan(s, false))
		p := jsonPlan(s, true)
		checkJSON(t, p)
		p.Sets = append(p.Sets, Set{Name: SetService4, Family: 4, Capacity: 7, Elements: []Element{
			{Service: "system.slice/" + s + ".service", UID: 2, IP: netip.MustParseAddr("192.0.2.2"), Comment: s},
			{Service: "system.slice/x.service", AnyUser: true, IP: netip.MustParseAddr("192.0.2.3"), Comment: s}}})
		checkJSON(t, p)
	}
	p := jsonPlan("x", true)
	p.Sets[0].Elements, p.Sets[1].Elements, p.Follow.Rules = nil, []Element{}, nil
	checkJSON(t, p)
	p.Follow.Rules = []NameRule{}
	checkJSON(t, p)
}

func FuzzPlanJSON(f *testing.F) {
	for _, s := range []string{"plain", `"elements":null`, `"follow":{"rules":null`, "\xff\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkJSON(t, jsonPlan(s, true))
	})
}
