package enforce

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/store"
)

// hostileExports are exports a compromised host could write: its host
// name, an address zone (of a flow the header lists as skipped, or of an
// element), hostnames and user names each try to end the line or the
// string they are written in and add a table of their own.
var hostileExports = map[string]string{
	"host": `{"format": "egress-baseline/1", "host": "h1\nadd table inet injected_host\n#",
	  "flows": [{"uid": 0, "proto": 6, "ip": "192.0.2.1", "port": 443, "hits": 3}]}`,
	"skipped zone": `{"format": "egress-baseline/1", "host": "h1",
	  "flows": [{"uid": 0, "proto": 6, "ip": "192.0.2.1", "port": 443, "hits": 3},
	    {"uid": 0, "proto": 1, "ip": "fe80::1%x\nadd table inet injected_zone\n#", "port": 0, "hits": 3}]}`,
	"element zone": `{"format": "egress-baseline/1", "host": "h1",
	  "flows": [{"uid": 0, "proto": 6, "ip": "192.0.2.1", "port": 443, "hits": 3},
	    {"uid": 0, "proto": 6, "ip": "fe80::2%y\nadd table inet injected_elem\n#", "port": 443, "hits": 3}]}`,
	"names": `{"format": "egress-baseline/1", "host": "h1", "users": {"0": "root\"\nadd table inet injected_user\n#"},
	  "flows": [{"uid": 0, "proto": 6, "ip": "192.0.2.1", "port": 443, "hits": 3,
	    "hostnames": ["a\"\nadd table inet injected_name\n#", "ok.example"]}]}`,
}

// The lines a script may hold, by where they are. A quoted string holds
// only what quote keeps (no '"', no backslash, no control character).
const (
	qs      = `"[A-Za-z0-9 .,:;_+*=/#()\[\]@'!?%&-]*"`
	idRe    = `[A-Za-z_][A-Za-z0-9_-]*`
	stmtRe  = `[a-z0-9 .,:/@&=!<>_{}-]*`
	addrRe  = `[0-9a-f:.]+`
	protoRe = `(tcp|udp|icmp|icmpv6|[0-9]+)`
)

var shapes = map[string][]*regexp.Regexp{
	"table": res(`set `+idRe+` \{`, `chain `+idRe+` \{`),
	"set": res(`type uid( \. ipv[46]_addr \. inet_proto \. inet_service)?`, `type cgroupsv2`, `size [0-9]+`, `flags timeout`,
		`timeout [0-9dhms]+`, `comment `+qs, `elements = \{ [0-9, ]* \}`),
	"elements": res(`[0-9]+ \. ` + addrRe + ` \. ` + protoRe + ` \. [0-9]+ comment ` + qs + `,?`),
	"chain": res(`type filter hook output priority filter; policy (accept|drop);`,
		`(`+stmtRe+`(`+qs+`)?)+ comment `+qs),
}

func res(exprs ...string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(exprs))
	for i, e := range exprs {
		out[i] = regexp.MustCompile(`^(` + e + `)$`)
	}
	return out
}

// checkScript says whether script holds nothing but our table's
// statements: at the top level only comment lines, "table inet T",
// "delete table inet T" and one "table inet T { ... }" block; inside it
// only sets and chains, each line one the renderer writes; no backslash
// and no control character but newlines and tabs anywhere.
func checkScript(script, table string) error {
	if strings.ContainsAny(script, "\\\r\v\f\x00") {
		return fmt.Errorf("a backslash or a control character")
	}
	var stack []string // "table", then "set"/"chain", then "elements"
	blocks := 0
	for n, line := range strings.Split(script, "\n") {
		l := strings.Trim(line, "\t")
		bad := func() error { return fmt.Errorf("line %d in %v: %q", n+1, stack, line) }
		if strings.ContainsAny(l, "\t") || strings.ContainsFunc(l, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			return bad()
		}
		if len(stack) == 0 {
			switch {
			case l == "" || strings.HasPrefix(l, "#") && blocks == 0:
			case l == "table inet "+table || l == "delete table inet "+table:
			case l == "table inet "+table+" {" && blocks == 0:
				stack, blocks = append(stack, "table"), 1
			default:
				return bad()
			}
			continue
		}
		where := stack[len(stack)-1]
		switch {
		case l == "" && where == "table":
		case l == "}":
			stack = stack[:len(stack)-1]
		case l == "elements = {" && where == "set":
			stack = append(stack, "elements")
		case matchAny(shapes[where], l):
			if where == "table" {
				stack = append(stack, strings.Fields(l)[0])
			}
			if where == "chain" && strings.Count(l, "{") != strings.Count(l, "}") {
				return bad()
			}
		default:
			return bad()
		}
	}
	if len(stack) != 0 || blocks != 1 {
		return fmt.Errorf("the table block is not closed, or missing")
	}
	return nil
}

func matchAny(rs []*regexp.Regexp, s string) bool {
	for _, r := range rs {
		if r.MatchString(s) {
			return true
		}
	}
	return false
}

// fuzzOptions are plan options built from fuzzed strings and flows, not
// checked: Build and Text must hold whatever reaches them.
func fuzzOptions(flows []store.Flow, source, reason, table string) Options {
	o := Options{Table: table, Mode: ModeEnforce, Source: source, ResolvConf: source, Now: tp,
		AlwaysAllow: []Allow{{Proto: ProtoTCP, Port: 22, Reason: reason}},
		Follow:      &FollowOptions{Mode: FollowBoth, Names: []NameRule{{Name: reason, Proto: ProtoTCP, Port: 443}}}}
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
			o.AlwaysAllow = append(o.AlwaysAllow, Allow{Dest: hostPrefix(f.IP), Reason: reason})
		}
	}
	return o
}

// renderChecked renders p and checks the script's shape; a table name
// that is not an identifier must be refused instead.
func renderChecked(t *testing.T, what string, p *Plan) {
	t.Helper()
	var b strings.Builder
	err := p.Text(&b)
	if config.ValidIdentifier(p.Table) != nil {
		if err == nil {
			t.Fatalf("%s: table %q rendered", what, p.Table)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := checkScript(b.String(), p.Table); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.String())
	}
}

// FuzzGenerate feeds arbitrary exports (checked as "generate --from"
// checks them, and unchecked), arbitrary baselines and arbitrary strings
// of the configuration to Build and Text: the script holds nothing but our
// table's statements. A plan read back as JSON (a stored generation)
// renders to the same shape or to an error.
func FuzzGenerate(f *testing.F) {
	for _, e := range hostileExports {
		f.Add([]byte(e), []byte(`[{"uid":1,"proto":17,"ip":"fe80::1%a\nb","port":123,"hits":2}]`), "db\n#x", "r\"\n", "egress")
	}
	good, _ := json.Marshal(Build([]store.Flow{pflow(1, ProtoTCP, "192.0.2.1", 443, 2, tp, "a.example")}, Options{Now: tp}))
	f.Add([]byte(`{"format":"egress-baseline/1","host":"web-1","flows":[]}`), good, "/var/lib/egress/baseline.db", "ssh", "egress")
	f.Add([]byte(`{}`), []byte(`[{"uid":0,"proto":6,"ip":"::ffff:1.2.3.4","port":1,"hits":1,"hostnames":["x\u2028y"]}]`), "", "", "bad name")
	f.Fuzz(func(t *testing.T, export, baseline []byte, source, reason, table string) {
		var e store.Export
		if json.Unmarshal(export, &e) == nil {
			raw := Merge([]*store.Export{&e})
			o := fuzzOptions(raw.Flows, source, reason, table)
			o.Hosts = raw.Hosts
			renderChecked(t, "unchecked export", Build(raw.Flows, o))
			if _, err := CheckExport(&e); err == nil {
				m := Merge([]*store.Export{&e})
				for _, f := range m.Flows {
					if CheckAddr(f.IP) != nil || f.IP.Is4In6() {
						t.Fatalf("a checked export holds address %q", f.IP)
					}
				}
				renderChecked(t, "checked export", Build(m.Flows, fuzzOptions(m.Flows, e.Host, reason, table)))
			}
		}
		var flows []store.Flow
		if json.Unmarshal(baseline, &flows) == nil {
			renderChecked(t, "baseline", Build(flows, fuzzOptions(flows, source, reason, table)))
		}
		var stored Plan
		if json.Unmarshal(baseline, &stored) == nil {
			var b strings.Builder
			if stored.Text(&b) == nil {
				if err := checkScript(b.String(), stored.Table); err != nil {
					t.Fatalf("stored plan: %v\n%s", err, b.String())
				}
			}
		}
	})
}

// TestCheckScriptCatchesInjection: the checker itself sees an added table,
// a string that ends early and a second block.
func TestCheckScriptCatchesInjection(t *testing.T) {
	p := Build([]store.Flow{pflow(1, ProtoTCP, "192.0.2.1", 443, 2, tp)}, Options{Now: tp, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Follow: &FollowOptions{Mode: FollowBoth}, EnforceUIDs: []uint32{1}, Mode: ModeEnforce})
	good := p.String()
	if err := checkScript(good, "egress"); err != nil {
		t.Fatalf("a plain script: %v\n%s", err, good)
	}
	for _, bad := range []string{
		strings.Replace(good, "# Mode", "add table inet x\n# Mode", 1),
		strings.Replace(good, `comment "learned flows: 1"`, `comment "learned" flows: 1"`, 1),
		good + "table inet egress {\n}\n",
		strings.Replace(good, "\tchain output {", "\tchain output {\n\t\tflush ruleset;", 1),
		strings.Replace(good, "}\n}\n", "}\n}\nadd table inet y\n", 1),
	} {
		if checkScript(bad, "egress") == nil {
			t.Errorf("not caught:\n%s", bad)
		}
	}
	// Every golden case has the shape too.
	for _, c := range goldenCases {
		if err := checkScript(goldenCasePlan(c.name, c.mode, c.enforce, c.audit).String(), "egress"); err != nil {
			t.Errorf("golden %s: %v", c.name, err)
		}
	}
}
