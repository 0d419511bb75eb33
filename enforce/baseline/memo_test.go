package baseline

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

var memoNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// memoFlows makes n flows of every kind a plan treats apart: plain ones
// with and without names, NTP, loopback, too few hits, retired, a
// hostname that is no DNS name (a warning).
func memoFlows(rng *rand.Rand, n int) []store.Flow {
	seen := map[store.FlowKey]bool{}
	var out []store.Flow
	for len(out) < n {
		var ip netip.Addr
		switch rng.IntN(20) {
		case 0:
			ip = netip.AddrFrom16([16]byte{0x2a, 0, 1, 2, 3, byte(rng.IntN(256)), 0, 0, 0, 0, 0, 0, 0, 0, byte(rng.IntN(256)), 1})
		case 1:
			ip = netip.MustParseAddr("127.0.0.1")
		default:
			ip = netip.AddrFrom4([4]byte{11, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(250))})
		}
		k := store.FlowKey{UID: 1000 + uint32(rng.IntN(5)), Proto: plan.ProtoTCP, IP: ip, Port: []uint16{443, 80, 8443}[rng.IntN(3)]}
		if rng.IntN(25) == 0 {
			k.Proto, k.Port = plan.ProtoUDP, 123
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		f := store.Flow{FlowKey: k, Hits: 1 + uint64(rng.IntN(50)), FirstSeen: memoNow.Add(-48 * time.Hour), LastSeen: memoNow.Add(-time.Duration(rng.IntN(100)) * time.Hour)}
		switch rng.IntN(6) {
		case 0, 1:
			f.Hostnames = []string{fmt.Sprintf("svc%d.Example.net", rng.IntN(30))}
		case 2:
			f.Hostnames = []string{"a.example.org", fmt.Sprintf("b%d.example.org", rng.IntN(3))}
		}
		switch rng.IntN(40) {
		case 0:
			f.Hostnames = append(f.Hostnames, "not a name!")
		case 1:
			f.Retired = f.LastSeen.Add(time.Hour)
		case 2:
			f.Approved, f.ApprovedAt = 3, memoNow
		}
		out = append(out, f)
	}
	return out
}

func writeMemoExport(t testing.TB, path string, flows []store.Flow, sorted bool) {
	t.Helper()
	flows = slices.Clone(flows)
	if sorted {
		slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	}
	data, err := json.Marshal(store.Export{Format: store.ExportFormat, Host: "web1", Exported: memoNow, Users: map[uint32]string{1000: "alice"}, Flows: flows})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func memoOptions(follow string, nameCheck string) plan.Options {
	o := plan.Options{Mode: plan.ModeEnforce, Now: memoNow, MinHits: 3, NameCheck: nameCheck,
		UserName: func(uid uint32) string { return fmt.Sprint("u", uid) }}
	if follow != "" {
		o.Follow = &plan.FollowOptions{Mode: follow, IPOnly: []string{"svc1.example.net"},
			Names: []plan.NameRule{{UID: 1000, Name: "svc3.example.net", Proto: plan.ProtoTCP, Port: 443}}}
	}
	return o
}

// fullPlan is the plan of the export at path as apply made it before the
// memo: ReadFleet, then Build.
func fullPlan(t *testing.T, path string, o plan.Options) ([]byte, []string) {
	t.Helper()
	var warnings []string
	m, source, err := ReadFleet([]string{path}, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatal(err)
	}
	o.Hosts, o.AllHosts, o.Source = m.Hosts, m.AllHosts, source
	return planJSON(t, plan.Build(m.Flows, o)), warnings
}

func planJSON(t *testing.T, p *plan.Plan) []byte {
	t.Helper()
	b, err := p.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// memoPlan reads the export at path with the memo, checks the plan is
// the full path's, and writes the memo as generation gen's; it returns
// the read.
func memoPlan(t *testing.T, path, memoPath string, gen uint64, o plan.Options) *ExportRead {
	t.Helper()
	want, wantWarn := fullPlan(t, path, o)
	var warnings []string
	r, err := ReadExportMemo(path, memoPath, gen, &o, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatal(err)
	}
	p := plan.BuildWith(r.Merged.Flows, r.Plain, o)
	if got := planJSON(t, p); string(got) != string(want) {
		t.Fatalf("the plan read with the memo (reason %q, %d reused) is not the full path's:\n%s", r.Reason, r.Reused, firstDiff(got, want))
	}
	if !slices.Equal(warnings, wantWarn) {
		t.Fatalf("warnings %q, want %q", warnings, wantWarn)
	}
	if err := WriteMemo(memoPath, gen, r.Memo(p)); err != nil {
		t.Fatal(err)
	}
	return r
}

func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(0, i-200)
	return fmt.Sprintf("got  ...%s\nwant ...%s", a[lo:min(len(a), i+200)], b[lo:min(len(b), i+200)])
}

// TestExportMemoSamePlan: an export changed in its middle (flows removed,
// added, one changed) read against the memo of the one before gives the
// plan the full path gives, for every follow mode and with a name check;
// only the changed flows are read.
func TestExportMemoSamePlan(t *testing.T) {
	for _, c := range []struct{ follow, nameCheck string }{{"", ""}, {plan.FollowBoth, ""}, {plan.FollowName, plan.NameCheckAudit}, {plan.FollowIP, ""}} {
		t.Run(c.follow+c.nameCheck, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(len(c.follow))))
			dir := t.TempDir()
			flows := memoFlows(rng, 3000)
			o := memoOptions(c.follow, c.nameCheck)
			base, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
			writeMemoExport(t, base, flows[:2500], true)
			if r := memoPlan(t, base, memoPath, 1, o); r.Reason == "" || r.Reused != 0 {
				t.Fatalf("the first read used a memo: reason %q, %d reused", r.Reason, r.Reused)
			}
			changed := slices.Concat(flows[:1000], flows[1100:2500], flows[2500:2600])
			changed[1500].Hits += 7
			changed[1501].Hostnames = append(changed[1501].Hostnames, "new.example.com")
			next := filepath.Join(dir, "next.json")
			writeMemoExport(t, next, changed, true)
			r := memoPlan(t, next, memoPath, 1, o)
			if r.Reason != "" || r.Reused < 1500 {
				t.Fatalf("the memo was not used: reason %q, %d reused", r.Reason, r.Reused)
			}
			// And once more, against the memo the last read wrote.
			writeMemoExport(t, base, flows[:2500], true)
			if r := memoPlan(t, base, memoPath, 1, o); r.Reason != "" || r.Reused < 1500 {
				t.Fatalf("the memo was not used: reason %q, %d reused", r.Reason, r.Reused)
			}
		})
	}
}

// TestExportMemoFallsBack: a memo of another generation, a damaged one,
// one of other options or user names, and an export out of key order are
// not used: the export is read whole, the plan is the full path's, and
// the reason says why.
func TestExportMemoFallsBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	flows := memoFlows(rng, 2000)
	o := memoOptions(plan.FollowBoth, "")
	for _, c := range []struct {
		name, why string
		change    func(t *testing.T, export, memo string, o *plan.Options) uint64
	}{
		{"stale", "the memo is of generation 1, the table is generation 2", func(*testing.T, string, string, *plan.Options) uint64 { return 2 }},
		{"damaged", "damaged", func(t *testing.T, _, memo string, _ *plan.Options) uint64 {
			b, _ := os.ReadFile(memo)
			b[len(b)/2] ^= 1
			os.WriteFile(memo, b, 0o600)
			return 1
		}},
		{"cut", "damaged", func(t *testing.T, _, memo string, _ *plan.Options) uint64 {
			b, _ := os.ReadFile(memo)
			os.WriteFile(memo, b[:len(b)-10], 0o600)
			return 1
		}},
		{"not a memo", "is not one", func(t *testing.T, _, memo string, _ *plan.Options) uint64 {
			os.WriteFile(memo, []byte("hello"), 0o600)
			return 1
		}},
		{"none", "no memo", func(t *testing.T, _, memo string, _ *plan.Options) uint64 { os.Remove(memo); return 1 }},
		{"options", "options changed", func(_ *testing.T, _, _ string, o *plan.Options) uint64 { o.MinHits = 10; return 1 }},
		{"user names", "the name of uid", func(_ *testing.T, _, _ string, o *plan.Options) uint64 {
			o.UserName = func(uid uint32) string { return fmt.Sprint("v", uid) }
			return 1
		}},
		{"reordered", "not in the form", func(t *testing.T, export, _ string, _ *plan.Options) uint64 {
			f := slices.Clone(flows[:1500])
			slices.SortFunc(f, func(a, b store.Flow) int { return b.FlowKey.Compare(a.FlowKey) })
			writeMemoExport(t, export, f, false)
			return 1
		}},
		{"escaped", "not in the form", func(t *testing.T, export, _ string, _ *plan.Options) uint64 {
			b, _ := os.ReadFile(export)
			b = []byte(strings.Replace(string(b), `"hits"`, `"h\u0069ts"`, 1))
			os.WriteFile(export, b, 0o600)
			return 1
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			export, memoPath := filepath.Join(dir, "export.json"), filepath.Join(dir, "memo")
			writeMemoExport(t, export, flows[:1500], true)
			memoPlan(t, export, memoPath, 1, o)
			writeMemoExport(t, export, flows[100:1600], true)
			o := o
			gen := c.change(t, export, memoPath, &o)
			r := memoPlan(t, export, memoPath, gen, o)
			if !strings.Contains(r.Reason, c.why) || r.Reused != 0 {
				t.Fatalf("reason %q (%d reused), want one saying %q", r.Reason, r.Reused, c.why)
			}
		})
	}
}
