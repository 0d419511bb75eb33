package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
)

// TestServicesEndToEnd is match service through the tools: the learner
// records two services of one user (a unit and a container scope), each
// fetching its own URL; generate writes their cgroup paths as nft resolves
// them; apply --match service lets each reach only its own destination;
// status names the services; "egress-enforce services" puts a restarted
// service's elements on its new cgroup id.
func TestServicesEndToEnd(t *testing.T) {
	lab.Require(t, "nsenter")
	h := newServiceHost(t, "")
	parent, env, as := h.parent, h.env, h.as
	a, b, c := parent.Child(t, "a.service"), parent.Child(t, "b.scope"), parent.Child(t, "c.service")

	learner, lerr := startLearner(t, env, "--cgroup", parent.Path, "--flush-interval", "200ms")
	as(a).MustRun(t, "curl", "-sS", url8080)
	as(b).MustRun(t, "curl", "-sS", url8081)
	stopLearner(t, learner, lerr)

	script := mustRun(t, enforceBin, env, "generate", "--mode", "enforce", "--match", "service")
	for _, w := range []string{`"unified/` + a.Rel(t) + `" . 10.77.0.1 . tcp . 8080`, "socket cgroupv2 level 2 . ip daddr"} {
		if !strings.Contains(script, w) {
			t.Errorf("script lacks %q:\n%s", w, script)
		}
	}
	mustFail(t, enforceBin, env, []string{"match", "is not user, service or user,service"}, "generate", "--match", "group")
	mustRun(t, enforceBin, env, "apply", "--mode", "enforce", "--match", "service")
	addr := lab.FreeAddr(t)
	_, _, werr := start(t, env, enforceBin, "watch", "--metrics-addr", addr, "--metrics-refresh", "100ms", "--flush-interval", "200ms")
	lab.Await(t, "watch", func() bool { return strings.Contains(werr.String(), "msg=watching") })

	if err := reach(as(a), url8080); err != nil {
		t.Errorf("a.service: %v", err)
	}
	if err := blocked(t, as(a), url8081); err != nil {
		t.Errorf("a.service to b's destination: %v", err)
	}
	if err := blocked(t, as(c), url8080); err != nil {
		t.Errorf("c.service, missing from the baseline: %v", err)
	}
	// denied names the services that sent what was dropped. The watch
	// finds a packet's service through its socket, so the senders keep
	// trying (SYN retries hold the socket) until denied names them: on a
	// busy machine the watch can read the log after a 2 s curl gave up.
	holdCtx, release := context.WithCancel(context.Background())
	for _, h := range []*exec.Cmd{as(a).Command(holdCtx, "curl", "-sS", "--max-time", "300", url8081), as(c).Command(holdCtx, "curl", "-sS", "--max-time", "300", url8080)} {
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { release(); _ = h.Wait() })
	}
	lab.Await(t, "denied to name the services", func() bool {
		var den struct {
			Destinations []struct {
				Port     uint16   `json:"port"`
				Services []string `json:"services"`
			} `json:"destinations"`
		}
		_ = json.Unmarshal([]byte(mustRun(t, enforceBin, env, "denied", "--json")), &den)
		found := 0
		for _, d := range den.Destinations {
			if d.Port == 8081 && slices.Equal(d.Services, []string{a.Rel(t)}) || d.Port == 8080 && slices.Equal(d.Services, []string{c.Rel(t)}) {
				found++
			}
		}
		return found == 2
	})
	release()
	lab.WantAll(t, "denied", mustRun(t, enforceBin, env, "denied"), "SERVICE", c.Rel(t))
	var d plan.Diff
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "diff", "--mode", "enforce", "--match", "service", "--json")), &d); err != nil || !d.Empty() {
		t.Errorf("diff after apply: %+v %v", d, err)
	}
	var st status
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 2 || st.Services[0].Service != a.Rel(t) || st.Services[1].Service != b.Rel(t) {
		t.Errorf("status services: %+v", st.Services)
	}

	lab.Await(t, "the service metric", func() bool {
		v, _ := lab.MetricValue(lab.Scrape(t, "http://"+addr+"/metrics"), "egress_service_elements", map[string]string{"service": a.Rel(t)})
		return v == 1
	})
	// The denied packets by user and service.
	fams := lab.Scrape(t, "http://"+addr+"/metrics")
	for _, svc := range []string{a.Rel(t), c.Rel(t)} {
		if v, _ := lab.MetricValue(fams, "egress_denied_packets_by_service_total", map[string]string{"action": "drop", "uid": "65534", "service": svc}); v < 1 {
			t.Errorf("egress_denied_packets_by_service_total of %s: %v", svc, v)
		}
	}
	if v, _ := lab.MetricValue(fams, "egress_denied_packets_by_service_total", map[string]string{"service": b.Rel(t)}); v != 0 {
		t.Errorf("b.scope was denied nothing, the metric says %v", v)
	}

	_, out, serr := start(t, env, enforceBin, "services")
	lab.Await(t, "the keeper to start", func() bool { return strings.Contains(serr.String(), "services: keeping") })
	b.Recreate(t)
	lab.Await(t, "the keeper to see the restart", func() bool {
		return strings.Contains(out.String(), "service "+b.Rel(t)+" started (cgroup id") ||
			strings.Contains(out.String(), "service "+b.Rel(t)+" restarted (cgroup id")
	})
	if err := reach(as(b), url8081); err != nil {
		t.Errorf("b.scope after its restart: %v\n%s", err, out.String())
	}
	if err := blocked(t, as(b), url8080); err != nil {
		t.Errorf("b.scope to a's destination after its restart: %v", err)
	}
}
