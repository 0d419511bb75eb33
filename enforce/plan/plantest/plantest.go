// Package plantest helps the tests of the packages that build, render and
// apply plans: flows to build from, the plans of the golden files,
// exports a hostile host could write, and a check that a script holds
// nothing but our table.
package plantest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// T0 is the time the tests' flows were last seen, and their plans built.
var T0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// Protocol numbers of the flows.
const (
	TCP  uint8 = 6
	UDP  uint8 = 17
	ICMP uint8 = 1
)

// Flow is a flow seen hits times by uid, last at last (first an hour
// before), by curl, its address resolved from names.
func Flow(uid uint32, proto uint8, ip string, port uint16, hits uint64, last time.Time, names ...string) store.Flow {
	return store.Flow{
		FlowKey:   store.FlowKey{UID: uid, Proto: proto, IP: netip.MustParseAddr(ip), Port: port},
		Hits:      hits,
		FirstSeen: last.Add(-time.Hour),
		LastSeen:  last,
		Hostnames: names,
		Processes: []string{"curl"},
	}
}

// HostileExports are exports a compromised host could write: its host
// name, an address zone (of a flow the header lists as skipped, or of an
// element), hostnames and user names each try to end the line or the
// string they are written in and add a table of their own.
var HostileExports = map[string]string{
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
	stmtRe  = `[A-Za-z0-9 .,:/@&=!<>_{}-]*` // as checkStatement: identifiers (set names) may have capitals
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

// CheckScript says whether script holds nothing but our table's
// statements: at the top level only comment lines, "table inet T",
// "delete table inet T" and one "table inet T { ... }" block; inside it
// only sets and chains, each line one the renderer writes; no backslash
// and no control character but newlines and tabs anywhere.
func CheckScript(script, table string) error {
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

// GoldenCase is the plan of a golden file (testdata/golden-NAME.nft of
// the plan package): the modes, staged enforcement both ways, and a
// table that follows names.
type GoldenCase struct {
	Name    string
	Mode    plan.Mode
	Enforce []uint32
	Audit   []uint32
}

// GoldenCases are the plans of the golden files.
var GoldenCases = []GoldenCase{
	{"audit", plan.ModeAudit, nil, nil},
	{"enforce", plan.ModeEnforce, nil, nil},
	{"staged-enforce-users", plan.ModeEnforce, []uint32{65534, 1000}, nil},
	{"staged-audit-users", plan.ModeEnforce, nil, []uint32{4242}},
	{"follow", plan.ModeEnforce, nil, nil},
}

// goldenSource names the golden plans' baseline.
const goldenSource = "/var/lib/egress/baseline.db"

// Plan builds the case's plan.
func (c GoldenCase) Plan() *plan.Plan {
	if c.Name == "follow" {
		return goldenFollowPlan(c.Mode)
	}
	uid := uint32(1000)
	flows := []store.Flow{
		Flow(65534, TCP, "10.77.0.1", 8080, 3, T0, "web.lab", "alias.lab"),
		Flow(0, TCP, "10.77.0.1", 8080, 1, T0),
		Flow(1000, UDP, "10.77.0.1", 9999, 12, T0),
		Flow(65534, TCP, "fd77::1", 443, 7, T0, "web.lab"),
		Flow(107, UDP, "192.0.2.123", 123, 50, T0, "ntp.example.org"),
		Flow(0, ICMP, "10.77.0.1", 0, 1, T0),
		Flow(0, TCP, "127.0.0.1", 5432, 9, T0),
	}
	return plan.Build(flows, plan.Options{
		Mode:       c.Mode,
		DNSServers: []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::53")},
		NTPServers: []netip.Addr{netip.MustParseAddr("192.0.2.124")},
		AlwaysAllow: []plan.Allow{
			{Proto: TCP, Dest: netip.MustParsePrefix("10.0.0.0/8"), Port: 443},
			{Proto: TCP, Dest: netip.MustParsePrefix("172.16.0.0/12"), Port: 22, UID: &uid, Reason: "backups"},
			{Proto: UDP, Dest: netip.MustParsePrefix("fd00:1::/64"), Port: 514},
			{Proto: ICMP, Dest: netip.MustParsePrefix("10.77.0.0/16")},
		},
		Now:         T0,
		Source:      goldenSource,
		EnforceUIDs: c.Enforce,
		AuditUIDs:   c.Audit,
	})
}

// goldenFollowPlan is a table that follows names, learned and configured.
func goldenFollowPlan(mode plan.Mode) *plan.Plan {
	flows := []store.Flow{
		Flow(65534, TCP, "10.77.0.1", 8080, 3, T0, "web.lab", "alias.lab"),
		Flow(65534, TCP, "fd77::1", 443, 7, T0, "web.lab"),
		Flow(0, TCP, "10.77.0.1", 8080, 1, T0),
	}
	return plan.Build(flows, plan.Options{
		Mode: mode, DNSServers: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, Now: T0, Source: goldenSource,
		Follow: &plan.FollowOptions{Mode: plan.FollowBoth, IPOnly: []string{"alias.lab"}, TTLFloor: 5 * time.Minute, MaxPerName: 32,
			Names: []plan.NameRule{{UID: 107, Name: "*.pool.ntp.org", Proto: UDP, Port: 123}}},
	})
}

// JSON is v as JSON, to compare plans (and parts of them) whole.
func JSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// StoredFlows reads the flows of the store at db (a learner's).
func StoredFlows(tb testing.TB, db string) []store.Flow {
	tb.Helper()
	st, err := store.Open(db, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	flows, err := st.Flows()
	if err != nil {
		tb.Fatal(err)
	}
	return flows
}

// SynthFlows makes n distinct TCP flows (the benchmarks' baseline) of 40 users to random public
// addresses (one in ten IPv6 when withV6), the same ones at every run,
// each with a CDN-like name, last seen at now and first seen two days
// before.
func SynthFlows(n int, now time.Time, withV6 bool) []store.Flow {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := make(map[store.FlowKey]bool, n)
	out := make([]store.Flow, 0, n)
	for len(out) < n {
		var ip netip.Addr
		if withV6 && rng.IntN(10) == 0 {
			var a [16]byte
			binary.BigEndian.PutUint64(a[:], 0x2a00000000000000|rng.Uint64()>>8)
			binary.BigEndian.PutUint64(a[8:], rng.Uint64())
			ip = netip.AddrFrom16(a)
		} else {
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], 0x0b000000+rng.Uint32()%0xb0000000)
			if a[0] == 127 {
				continue
			}
			ip = netip.AddrFrom4(a)
		}
		k := store.FlowKey{UID: 1000 + uint32(rng.IntN(40)), Proto: plan.ProtoTCP, IP: ip, Port: []uint16{443, 80, 8443, 5432}[rng.IntN(4)]}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, store.Flow{FlowKey: k, Hits: 1 + uint64(rng.IntN(5000)), FirstSeen: now.Add(-48 * time.Hour), LastSeen: now,
			Hostnames: []string{fmt.Sprintf("svc%d.r%d.cdn.example.net", rng.IntN(100000), rng.IntN(20))}, Processes: []string{"java"}})
	}
	return out
}
