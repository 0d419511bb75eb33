package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
	"github.com/egresskit/egress/store"
)

// TestNameCheckCommand: with name_check enforce, generate lists the
// name-checked element, and "egress-enforce namecheck" lets the learned
// name through and drops another name on the same address and port,
// printing it and counting it in the metrics.
func TestNameCheckCommand(t *testing.T) {
	lab.Require(t, "nft", "curl")
	l := newRolloutLab(t)
	st, err := store.Open(l.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	named := store.Flow{FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: netip.MustParseAddr(lab.ServerIP4), Port: 8081},
		Hits: 3, FirstSeen: now, LastSeen: now, Processes: []string{"curl"}, Hostnames: []string{"name1.lab"}}
	if err := st.Apply(&store.Batch{Flows: []store.Flow{named}}); err != nil {
		t.Fatal(err)
	}
	l.env = append(l.env, "EGRESS_NAME_CHECK=enforce")
	if gen := l.run(t, "generate", "--mode", "enforce"); !strings.Contains(gen, "#   uid 65534 tcp 10.77.0.1:8081 enforce: name1.lab\n") {
		t.Fatalf("generate does not list the name-checked element:\n%s", gen)
	}
	if out := l.run(t, "apply", "--mode", "enforce"); !strings.Contains(out, "applied generation 1") {
		t.Fatal(out)
	}
	cg := lab.NewCgroup(t)
	addr := lab.FreeAddr(t)
	pin := lab.NewBPFFS(t)
	if out := l.run(t, "status", "--pin-dir", pin); !strings.Contains(out, "name check: 1 name-checked elements (enforce), not attached") || !strings.Contains(out, "names are not checked") {
		t.Errorf("status before namecheck runs:\n%s", out)
	}
	cmd, stdout, stderr := start(t, l.env, enforceBin, "namecheck", "--cgroup", cg.Path, "--json", "--metrics-addr", addr, "--pin-dir", pin)
	lab.Await(t, "namecheck to set the destinations", func() bool { return strings.Contains(stderr.String(), "destinations=1") })
	nobody := lab.As{UID: 65534, GID: 65534, Netns: l.pair.Client, Cgroup: cg}
	url := "http://" + lab.ServerIP4 + ":8081/"
	if err := reach(nobody, url, "-H", "Host: name1.lab"); err != nil {
		t.Fatalf("the learned name: %v", err)
	}
	err = nobody.Blocked(func() bool { return strings.Contains(stdout.String(), `"name":"name2.lab"`) }, "curl", "-sS", "-H", "Host: name2.lab", url)
	if err != nil {
		t.Fatalf("another name on the same address and port: %v", err)
	}
	if !strings.Contains(stdout.String(), `"enforced":true`) || !strings.Contains(stderr.String(), "presented=name2.lab") {
		t.Errorf("the refusal is not printed and logged:\n%s\n%s", stdout.String(), stderr.String())
	}
	fams := lab.Scrape(t, "http://"+addr+"/metrics")
	if v, _ := lab.MetricValue(fams, "egress_namecheck_refused_total", map[string]string{"uid": "65534", "verdict": "mismatch", "action": "dropped"}); v != 1 {
		t.Errorf("refused metric: %v", v)
	}
	if v, _ := lab.MetricValue(fams, "egress_namecheck_connections_total", map[string]string{"result": "passed"}); v != 1 {
		t.Errorf("passed metric: %v", v)
	}
	if out := l.run(t, "status", "--pin-dir", pin); !strings.Contains(out, "name check: 1 name-checked elements (enforce), attached") || !strings.Contains(out, "connections checked: 2 (1 passed, 1 presented another name, 0 no name)") {
		t.Errorf("status while namecheck runs:\n%s", out)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("namecheck after SIGINT: %v", err)
	}
	if !strings.Contains(stderr.String(), "names are no longer checked") {
		t.Errorf("the stop is not said:\n%s", stderr.String())
	}
	var sum monitor.DeniedSummary
	if err := json.Unmarshal([]byte(l.run(t, "denied", "--json")), &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.RefusedNames) != 1 || sum.RefusedNames[0].Presented != "name2.lab" || sum.RefusedNames[0].Dropped != 1 || sum.RefusedNames[0].Kind != "http" {
		t.Errorf("denied: refused names %+v", sum.RefusedNames)
	}
	if out := l.run(t, "denied"); !strings.Contains(out, "names refused by the name check") || !strings.Contains(out, "http name2.lab") {
		t.Errorf("denied:\n%s", out)
	}
}
