package baseline

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// fuzzOptions are plan options built from fuzzed strings and flows, not
// checked: plan.Build and Text must hold whatever reaches them.
func fuzzOptions(flows []store.Flow, source, reason, table string) plan.Options {
	o := plan.Options{Table: table, Mode: plan.ModeEnforce, Source: source, ResolvConf: source, Now: tp,
		AlwaysAllow: []plan.Allow{{Proto: plan.ProtoTCP, Port: 22, Reason: reason}},
		Follow:      &plan.FollowOptions{Mode: plan.FollowBoth, Names: []plan.NameRule{{Name: reason, Proto: plan.ProtoTCP, Port: 443}}}}
	for i, f := range flows {
		switch i % 3 {
		case 0:
			o.DNSServers = append(o.DNSServers, f.IP)
		case 1:
			o.NTPServers = append(o.NTPServers, f.IP)
		default:
			o.EnforceUIDs = append(o.EnforceUIDs, f.UID)
		}
		if f.IP.IsValid() && f.IP.Zone() == "" {
			o.AlwaysAllow = append(o.AlwaysAllow, plan.Allow{Dest: netip.PrefixFrom(f.IP.Unmap(), f.IP.Unmap().BitLen()), Reason: reason})
		}
	}
	return o
}

// renderChecked renders p and checks the script's shape; a table name
// that is not an identifier must be refused instead.
func renderChecked(t *testing.T, what string, p *plan.Plan) {
	t.Helper()
	var b strings.Builder
	err := p.Text(&b)
	if plan.ValidIdentifier(p.Table) != nil {
		if err == nil {
			t.Fatalf("%s: table %q rendered", what, p.Table)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := plantest.CheckScript(b.String(), p.Table); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.String())
	}
}

// FuzzGenerate feeds arbitrary exports (checked as "generate --from"
// checks them, and unchecked), arbitrary baselines and arbitrary strings
// of the configuration to plan.Build and Text: the script holds nothing but our
// table's statements. A plan read back as JSON (a stored generation)
// renders to the same shape or to an error.
func FuzzGenerate(f *testing.F) {
	for _, e := range plantest.HostileExports {
		f.Add([]byte(e), []byte(`[{"uid":1,"proto":17,"ip":"fe80::1%a\nb","port":123,"hits":2}]`), "db\n#x", "r\"\n", "egress")
	}
	good, _ := json.Marshal(plan.Build([]store.Flow{pflow(1, plan.ProtoTCP, "192.0.2.1", 443, 2, tp, "a.example")}, plan.Options{Now: tp}))
	f.Add([]byte(`{"format":"egress-baseline/1","host":"web-1","flows":[]}`), good, "/var/lib/egress/baseline.db", "ssh", "egress")
	f.Add([]byte(`{}`), []byte(`[{"uid":0,"proto":6,"ip":"::ffff:1.2.3.4","port":1,"hits":1,"hostnames":["x\u2028y"]}]`), "", "", "bad name")
	f.Fuzz(func(t *testing.T, export, baseline []byte, source, reason, table string) {
		var e store.Export
		if json.Unmarshal(export, &e) == nil {
			raw := Merge([]*store.Export{&e})
			o := fuzzOptions(raw.Flows, source, reason, table)
			o.Hosts = raw.Hosts
			renderChecked(t, "unchecked export", plan.Build(raw.Flows, o))
			if _, err := CheckExport(&e); err == nil {
				m := Merge([]*store.Export{&e})
				for _, f := range m.Flows {
					if plan.CheckAddr(f.IP) != nil || f.IP.Is4In6() {
						t.Fatalf("a checked export holds address %q", f.IP)
					}
				}
				renderChecked(t, "checked export", plan.Build(m.Flows, fuzzOptions(m.Flows, e.Host, reason, table)))
			}
		}
		var flows []store.Flow
		if json.Unmarshal(baseline, &flows) == nil {
			renderChecked(t, "baseline", plan.Build(flows, fuzzOptions(flows, source, reason, table)))
		}
		var stored plan.Plan
		if json.Unmarshal(baseline, &stored) == nil {
			var b strings.Builder
			if stored.Text(&b) == nil {
				if err := plantest.CheckScript(b.String(), stored.Table); err != nil {
					t.Fatalf("stored plan: %v\n%s", err, b.String())
				}
			}
		}
	})
}
