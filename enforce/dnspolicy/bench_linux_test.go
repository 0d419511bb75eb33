//go:build linux

package dnspolicy

import (
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/internal/lab"
)

// TestAllowListBounds: the allow-list map is sized to the entries and
// bounded by MaxEntries; over the bound Install refuses, and the policy
// in place stays.
func TestAllowListBounds(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	many := make([]Entry, 1001)
	for i := range many {
		many[i] = Entry{UID: uint32(i), Name: fmt.Sprintf("n%d.example.lab", i)}
	}
	cfg := e.cfg
	cfg.MaxEntries = 1000
	if _, err := Install(cfg, many); err == nil || !strings.Contains(err.Error(), "over the bound of 1000") {
		t.Fatalf("install over the bound: %v", err)
	}
	if r := Status(e.cfg); !r.Attached || r.Entries != 2 {
		t.Fatalf("the policy in place: %+v", r)
	}
	// The default bound, full: loads, and still decides.
	full := make([]Entry, DefaultMaxEntries)
	for i := range full {
		full[i] = Entry{UID: alice, Name: fmt.Sprintf("n%d.example.lab", i)}
	}
	full[0].Name = "www.example.lab"
	start := time.Now()
	if _, err := Install(e.cfg, full); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	r := Status(e.cfg)
	t.Logf("%d entries installed in %v", r.Entries, took)
	if r.Entries != DefaultMaxEntries {
		t.Errorf("entries: %+v", r)
	}
	if got := e.dig(alice, "www.example.lab"); got != "10.77.0.80" {
		t.Errorf("after the full install: %q", got)
	}
	e.stoppedDig(bob, "www.example.lab")
}

// benchLab is a client in a cgroup and a server namespace with a UDP
// sink on port 53 and dnsmasq on a second address.
type benchLab struct {
	p   *lab.Pair
	cg  *lab.Cgroup
	cfg Config
}

func newBenchLab(b *testing.B) *benchLab {
	lab.Require(b, "dnsmasq", "dig")
	l := &benchLab{p: lab.NewPair(b), cg: lab.NewCgroup(b)}
	lab.StartDNS(b, l.p.Server, []string{lab.ServerIP4}, lab.DNSRecord{Name: "www.example.lab", IPs: []string{"10.77.0.80"}})
	l.cfg = Config{Cgroup: l.cg.Path, Target: nft.Target{Netns: l.p.Client.Name}, Table: "egress_bench", PinRoot: lab.NewBPFFS(b)}
	return l
}

func (l *benchLab) set(b *testing.B, mode Mode) {
	l.cfg.Mode = mode
	entries, _ := Dedup(learned)
	if _, err := Install(l.cfg, entries); err != nil {
		b.Fatal(err)
	}
}

func (l *benchLab) helper(b *testing.B, mode string, msg []byte, n int) string {
	a := lab.As{UID: alice, GID: alice, Netns: l.p.Client, Cgroup: l.cg}
	out, err := a.Run("env", "DP_HELPER="+mode, "DP_SERVER="+lab.ServerIP4+":53", "DP_MSG="+hex.EncodeToString(msg),
		"DP_N="+strconv.Itoa(n), helperBin)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkQueryRate: queries a second one client sends through the
// egress hook (to dnsmasq, which answers what it can), with no policy,
// audit and enforce, in alternating rounds; the median of each and the
// ratio to no policy. The goal: enforce/off >= 0.95. Beside the
// rates (which other load on the machine moves a lot), the sending
// thread's CPU time per query (the program runs in the send): its ratio
// off/enforce is the rate ratio of a client bound by its CPU; and the
// median of each round's paired ratios.
func BenchmarkQueryRate(b *testing.B) {
	l := newBenchLab(b)
	msg := query("www.example.lab")
	rates, cpus := map[Mode][]float64{}, map[Mode][]float64{}
	var pairRate, pairCPU []float64
	for range queryRateRounds() {
		for _, m := range []Mode{Off, Audit, Enforce} {
			l.set(b, m)
			out := strings.Fields(l.helper(b, "flood", msg, 100000))
			if len(out) != 2 {
				b.Fatal(out)
			}
			r, err1 := strconv.ParseFloat(out[0], 64)
			c, err2 := strconv.ParseFloat(out[1], 64)
			if err1 != nil || err2 != nil {
				b.Fatal(out)
			}
			rates[m], cpus[m] = append(rates[m], r), append(cpus[m], c)
		}
		i := len(rates[Off]) - 1
		pairRate = append(pairRate, rates[Enforce][i]/rates[Off][i])
		pairCPU = append(pairCPU, cpus[Off][i]/cpus[Enforce][i])
	}
	off := median(rates[Off])
	for _, m := range []Mode{Off, Audit, Enforce} {
		b.ReportMetric(median(rates[m]), string(m)+"_qps")
		b.ReportMetric(median(cpus[m]), string(m)+"_cpu_us/query")
	}
	b.ReportMetric(median(rates[Enforce])/off, "enforce/off")
	b.ReportMetric(median(pairRate), "enforce/off_paired")
	b.ReportMetric(median(cpus[Off])/median(cpus[Enforce]), "enforce/off_cpu")
	b.ReportMetric(median(pairCPU), "enforce/off_cpu_paired")
	b.Logf("queries/s (%d rounds each): off %.0f, audit %.0f, enforce %.0f", len(rates[Off]), rates[Off], rates[Audit], rates[Enforce])
	b.Logf("sender CPU us/query: off %.2f, audit %.2f, enforce %.2f", cpus[Off], cpus[Audit], cpus[Enforce])
}

// queryRateRounds is DP_ROUNDS (default 5): the rounds of BenchmarkQueryRate.
func queryRateRounds() int {
	if n, err := strconv.Atoi(os.Getenv("DP_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// BenchmarkResolveLatency: round trips of 100 lookups of a learned name
// to dnsmasq, one after the other, in audit and in enforce; p50 and p99
// of each, alternating rounds. The goal: enforce p99 within 1.1x
// of audit.
func BenchmarkResolveLatency(b *testing.B) {
	l := newBenchLab(b)
	msg := query("www.example.lab")
	lat := map[Mode][]float64{}
	for range 5 {
		for _, m := range []Mode{Audit, Enforce} {
			l.set(b, m)
			for _, f := range strings.Fields(l.helper(b, "latency", msg, 100)) {
				us, _ := strconv.ParseFloat(f, 64)
				lat[m] = append(lat[m], us)
			}
		}
	}
	for _, m := range []Mode{Audit, Enforce} {
		b.ReportMetric(quantile(lat[m], 0.5), string(m)+"_p50_us")
		b.ReportMetric(quantile(lat[m], 0.99), string(m)+"_p99_us")
	}
	b.ReportMetric(quantile(lat[Enforce], 0.99)/quantile(lat[Audit], 0.99), "enforce/audit_p99")
}

func median(v []float64) float64 { return quantile(v, 0.5) }

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
