package plan_test

import (
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// tp is when the tests' flows were last seen; pflow makes one.
var (
	tp    = plantest.T0
	pflow = plantest.Flow
)

// goldenCases are the plans of the golden files: the modes, and staged
// enforcement both ways.
var goldenCases = []struct {
	name    string
	mode    plan.Mode
	enforce []uint32
	audit   []uint32
}{
	{"audit", plan.ModeAudit, nil, nil},
	{"enforce", plan.ModeEnforce, nil, nil},
	{"staged-enforce-users", plan.ModeEnforce, []uint32{65534, 1000}, nil},
	{"staged-audit-users", plan.ModeEnforce, nil, []uint32{4242}},
	{"follow", plan.ModeEnforce, nil, nil},
}

func goldenPlan(mode plan.Mode, stage ...[]uint32) *plan.Plan {
	uid := uint32(1000)
	flows := []store.Flow{
		pflow(65534, plan.ProtoTCP, "10.77.0.1", 8080, 3, tp, "web.lab", "alias.lab"),
		pflow(0, plan.ProtoTCP, "10.77.0.1", 8080, 1, tp),
		pflow(1000, plan.ProtoUDP, "10.77.0.1", 9999, 12, tp),
		pflow(65534, plan.ProtoTCP, "fd77::1", 443, 7, tp, "web.lab"),
		pflow(107, plan.ProtoUDP, "192.0.2.123", 123, 50, tp, "ntp.example.org"),
		pflow(0, plan.ProtoICMP, "10.77.0.1", 0, 1, tp),
		pflow(0, plan.ProtoTCP, "127.0.0.1", 5432, 9, tp),
	}
	return plan.Build(flows, plan.Options{
		Mode:       mode,
		DNSServers: []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::53")},
		NTPServers: []netip.Addr{netip.MustParseAddr("192.0.2.124")},
		AlwaysAllow: []plan.Allow{
			{Proto: plan.ProtoTCP, Dest: netip.MustParsePrefix("10.0.0.0/8"), Port: 443},
			{Proto: plan.ProtoTCP, Dest: netip.MustParsePrefix("172.16.0.0/12"), Port: 22, UID: &uid, Reason: "backups"},
			{Proto: plan.ProtoUDP, Dest: netip.MustParsePrefix("fd00:1::/64"), Port: 514},
			{Proto: plan.ProtoICMP, Dest: netip.MustParsePrefix("10.77.0.0/16")},
		},
		Now:         tp,
		Source:      "/var/lib/egress/baseline.db",
		EnforceUIDs: at(stage, 0),
		AuditUIDs:   at(stage, 1),
	})
}

// goldenCasePlan is goldenPlan, following names for the "follow" case.
func goldenCasePlan(name string, mode plan.Mode, enforce, audit []uint32) *plan.Plan {
	if name != "follow" {
		return goldenPlan(mode, enforce, audit)
	}
	p := goldenPlan(mode)
	flows := []store.Flow{
		pflow(65534, plan.ProtoTCP, "10.77.0.1", 8080, 3, tp, "web.lab", "alias.lab"),
		pflow(65534, plan.ProtoTCP, "fd77::1", 443, 7, tp, "web.lab"),
		pflow(0, plan.ProtoTCP, "10.77.0.1", 8080, 1, tp),
	}
	return plan.Build(flows, plan.Options{
		Mode: mode, DNSServers: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, Now: tp, Source: p.Source,
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth, IPOnly: []string{"alias.lab"}, TTLFloor: 5 * time.Minute, MaxPerName: 32,
			Names: []plan.NameRule{{UID: 107, Name: "*.pool.ntp.org", Proto: plan.ProtoUDP, Port: 123}}},
	})
}

func at(l [][]uint32, i int) []uint32 {
	if i < len(l) {
		return l[i]
	}
	return nil
}

// TestGoldenText compares the nft text of fixed plans with testdata;
// go test -update rewrites them. render_linux_test.go checks that nft
// accepts every golden file.
func TestGoldenText(t *testing.T) {
	for _, c := range goldenCases {
		got := goldenCasePlan(c.name, c.mode, c.enforce, c.audit).String()
		file := filepath.Join("testdata", "golden-"+c.name+".nft")
		if *update {
			if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s differs from the rendering (go test ./enforce -run TestGoldenText -update to accept):\n%s", file, got)
		}
	}
}

func TestBuildKeepsOnlyWhatWasSeen(t *testing.T) {
	now := tp
	flows := []store.Flow{
		pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 10, now),
		pflow(1, plan.ProtoTCP, "192.0.2.2", 443, 1, now),                        // too few hits
		pflow(1, plan.ProtoTCP, "192.0.2.3", 443, 10, now.Add(-40*24*time.Hour)), // too old
		pflow(1, plan.ProtoICMP, "192.0.2.4", 0, 10, now),                        // not tcp/udp
		pflow(1, plan.ProtoTCP, "::1", 80, 10, now),                              // loopback rule covers it
		pflow(2, plan.ProtoUDP, "2001:db8::9", 53, 10, now),
	}
	p := plan.Build(flows, plan.Options{MinHits: 2, Since: 30 * 24 * time.Hour, Now: now})
	if p.Flows != 2 || len(p.Sets[0].Elements) != 1 || len(p.Sets[1].Elements) != 1 {
		t.Fatalf("flows %d, sets %+v", p.Flows, p.Sets)
	}
	if got := p.Sets[0].Elements[0].Key(); got != "1 . 192.0.2.1 . tcp . 443" {
		t.Errorf("v4 element %s", got)
	}
	if got := p.Sets[1].Elements[0].Key(); got != "2 . 2001:db8::9 . udp . 53" {
		t.Errorf("v6 element %s", got)
	}
	if len(p.Skipped) != 3 {
		t.Errorf("skipped %+v, want 3 with reasons", p.Skipped)
	}
	text := p.String()
	for _, w := range []string{"--min-hits", "--since", "only tcp and udp"} {
		if !strings.Contains(text, w) {
			t.Errorf("text does not say why a flow was skipped (%q)", w)
		}
	}
	// Nothing is widened: no prefix shorter than a host, no port-less element.
	if strings.Contains(text, "/24") || strings.Contains(text, "/16") {
		t.Errorf("a learned flow was widened:\n%s", text)
	}
}

func TestGuard(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	local := []netip.Addr{netip.MustParseAddr("127.0.0.53")}
	some := []store.Flow{pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 1, tp)}
	withUpstream := append(some, pflow(991, plan.ProtoUDP, "192.0.2.53", 53, 5, tp))
	cases := []struct {
		name    string
		flows   []store.Flow
		opts    plan.Options
		readErr error
		want    string // "" passes
	}{
		{"audit always passes", nil, plan.Options{Mode: plan.ModeAudit}, errors.New("x"), ""},
		{"unreadable", nil, plan.Options{Mode: plan.ModeEnforce, DNSServers: dns}, errors.New("open store: corrupt"), "cannot be read"},
		{"empty", nil, plan.Options{Mode: plan.ModeEnforce, DNSServers: dns}, nil, "no flows"},
		{"all filtered", some, plan.Options{Mode: plan.ModeEnforce, DNSServers: dns, MinHits: 5}, nil, "no flow of the baseline is left"},
		{"no dns", some, plan.Options{Mode: plan.ModeEnforce}, nil, "cut off DNS"},
		{"local resolver without upstream", some, plan.Options{Mode: plan.ModeEnforce, DNSServers: local}, nil, "local resolver"},
		{"local resolver with learned upstream", withUpstream, plan.Options{Mode: plan.ModeEnforce, DNSServers: local}, nil, ""},
		{"local resolver with allowed upstream", some, plan.Options{Mode: plan.ModeEnforce, DNSServers: local,
			AlwaysAllow: []plan.Allow{{Proto: plan.ProtoUDP, Dest: netip.MustParsePrefix("192.0.2.0/24"), Port: 53}}}, nil, ""},
		{"fine", some, plan.Options{Mode: plan.ModeEnforce, DNSServers: dns}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Now = tp
			err := plan.Guard(plan.Build(c.flows, c.opts), c.readErr)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, plan.ErrUnsafe)):
				t.Errorf("err = %v, want ErrUnsafe mentioning %q", err, c.want)
			}
		})
	}
}

// TestGuardFromThePlanAlone: staged enforcement, either way, is checked
// like enforce mode, and a plan read back from JSON (a stored generation)
// gets the same answer as the one built.
func TestGuardFromThePlanAlone(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	some := []store.Flow{pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 1, tp)}
	cases := []struct {
		name  string
		flows []store.Flow
		opts  plan.Options
		want  string // "" passes
	}{
		{"staged enforce-users, empty", nil, plan.Options{Mode: plan.ModeEnforce, EnforceUIDs: []uint32{0}, DNSServers: dns}, "no flows"},
		{"staged audit-users, empty", nil, plan.Options{Mode: plan.ModeEnforce, AuditUIDs: []uint32{0}, DNSServers: dns}, "no flows"},
		{"staged enforce-users, no dns", some, plan.Options{Mode: plan.ModeEnforce, EnforceUIDs: []uint32{0}}, "cut off DNS"},
		{"staged audit-users, local resolver", some, plan.Options{Mode: plan.ModeEnforce, AuditUIDs: []uint32{0},
			DNSServers: []netip.Addr{netip.MustParseAddr("127.0.0.53")}}, "local resolver"},
		{"staged, fine", some, plan.Options{Mode: plan.ModeEnforce, EnforceUIDs: []uint32{0}, DNSServers: dns}, ""},
		{"audit, empty", nil, plan.Options{Mode: plan.ModeAudit}, ""},
		{"enforce, dns in a multi-server rule", some, plan.Options{Mode: plan.ModeEnforce,
			DNSServers: []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("10.0.0.53")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Now = tp
			built := plan.Build(c.flows, c.opts)
			data, err := json.Marshal(built)
			if err != nil {
				t.Fatal(err)
			}
			var stored plan.Plan
			if err := json.Unmarshal(data, &stored); err != nil {
				t.Fatal(err)
			}
			for what, p := range map[string]*plan.Plan{"built": built, "stored": &stored} {
				err := plan.Guard(p, nil)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%s: refused: %v", what, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, plan.ErrUnsafe)):
					t.Errorf("%s: err = %v, want ErrUnsafe mentioning %q", what, err, c.want)
				}
			}
		})
	}
	if got := plan.Build(nil, plan.Options{Now: tp, DNSServers: []netip.Addr{netip.MustParseAddr("fd00::53"), netip.MustParseAddr("10.0.0.53")}}).DNSServers(); len(got) != 2 {
		t.Errorf("DNS servers of the plan: %v", got)
	}
}
