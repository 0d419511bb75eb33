package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// TestDeniedEscapesHostileQueryNames: a local user under dns_policy
// enforce asks (with dig's \DDD escapes, the bytes go on the wire as they
// are) for names whose labels hold a newline, a tab, a terminal escape
// sequence and tabwriter's escape byte. "denied" and "reconcile" show each
// escaped on its own line: no forged row, no terminal command; --json
// carries the raw bytes.
func TestDeniedEscapesHostileQueryNames(t *testing.T) {
	lab.Require(t, "dig", "dnsmasq", "nft")
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4}, lab.DNSRecord{Name: "www.lab", IPs: []string{"10.77.0.82"}})
	dir := t.TempDir()
	yaml := fmt.Sprintf("db: %s\nnetns: %s\ndns_policy: enforce\n", filepath.Join(dir, "baseline.db"), pair.Client.Name)
	_, env, where, alice, bob := dnsPolicyLab(t, pair, cg, yaml)

	learner, lerr := startLearner(t, env, "--cgroup", cg.Path, "--flush-interval", "200ms")
	bob.MustRun(t, "dig", "+short", "@"+lab.ServerIP4, "www.lab")
	stopLearner(t, learner, lerr)
	mustRun(t, enforceBin, env, append([]string{"dns-policy", "apply"}, where...)...)
	watch, _, werr := start(t, env, enforceBin, append([]string{"dns-policy", "watch", "--flush", "100ms"}, where...)...)
	lab.Await(t, "the watch", func() bool { return strings.Contains(werr.String(), "watching dns policy reports") })

	// dig's presentation format: \010 newline, \009 tab, \027 ESC, \255.
	for _, q := range []string{`x\010evil\009row\027[2j.attack.evil`, `y\255z\027]0;pwned\007.attack.evil`} {
		if _, err := alice.Run("dig", "+time=1", "+tries=1", "@"+lab.ServerIP4, q); err == nil {
			t.Errorf("%s resolved", q)
		}
	}
	lab.Await(t, "the reports", func() bool { return strings.Count(werr.String(), "attack.evil") >= 2 })
	_ = watch.Process.Signal(os.Interrupt)
	_ = watch.Wait()

	// (The store keeps names as JSON: 0xff comes back as U+FFFD.)
	want := []string{`x\nevil\trow\x1b[2j.attack.evil`, `z\x1b]0;pwned\a.attack.evil`}
	denied := mustRun(t, enforceBin, env, "denied")
	checkEscaped(t, "denied", denied, want)
	checkEscaped(t, "reconcile", mustRun(t, enforceBin, env, "reconcile"), want)
	if js := mustRun(t, enforceBin, env, "denied", "--json"); !strings.Contains(js, `x\nevil\trow\u001b[2j.attack.evil`) {
		t.Errorf("denied --json does not carry the raw name:\n%s", js)
	}
}

// checkEscaped: out holds each of want (an escaped name) and nothing a
// terminal or a table would act on (textsafe.Unsafe).
func checkEscaped(t *testing.T, what, out string, want []string) {
	t.Helper()
	lab.WantAll(t, what, out, want...)
	if i := textsafe.Unsafe(out); i >= 0 {
		t.Errorf("%s writes %q raw at %d:\n%q", what, out[i:min(len(out), i+8)], i, out)
	}
}

// TestHistoryEscapesReasons: a --reason (an operator's text, maybe pasted
// from a ticket), a note naming a service and the services staged are
// written escaped: one generation, one line, no terminal command.
func TestHistoryEscapesReasons(t *testing.T) {
	gens := []store.Generation{{N: 1, Time: time.Now(), Mode: "audit", State: "applied", Command: "apply\tx",
		Reason: "ticket 42\n* 9  2026-01-01 00:00:00  enforce", Note: "rolled back: \x1b[2Jdenied", EnforceServices: []string{"evil\x1b]0;x\a.service"}}}
	var b strings.Builder
	if err := writeHistory(&b, gens, 1); err != nil {
		t.Fatal(err)
	}
	checkEscaped(t, "history", b.String(), []string{`ticket 42\n* 9`, `rolled back: \x1b[2Jdenied`, `evil\x1b]0;x\a.service`, `apply\tx`})
	if n := strings.Count(b.String(), "\n"); n != 3 {
		t.Errorf("history: %d lines, want 3:\n%s", n, b.String())
	}
}
