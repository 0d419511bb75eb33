//go:build linux

package deploy

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestMonitoringUsesExportedMetrics: every metric and label the dashboard
// and the alert rules use is served by the real binaries. In a lab, with
// our table in audit mode in a namespace of its own and a packet it
// logged, it scrapes egress-enforce watch, egress-enforce follow and
// egress-learn run over HTTP (the Prometheus text parser), and checks each
// query's metrics and labels against what they serve.
func TestMonitoringUsesExportedMetrics(t *testing.T) {
	lab.Require(t, "nft", "curl", "dnsmasq", "dig")
	bin := buildTools(t)
	pair := lab.NewPair(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4}, lab.DNSRecord{Name: "alt.lab", IPs: []string{"10.77.0.5"}})
	dir := t.TempDir()
	db := filepath.Join(dir, "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	flow := store.Flow{FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: netip.MustParseAddr(lab.ServerIP4), Port: 8080},
		Hits: 3, FirstSeen: now, LastSeen: now, Processes: []string{"curl"}}
	if err := st.Apply(&store.Batch{Flows: []store.Flow{flow}}); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte("follow_names:\n  - {name: alt.lab, user: nobody, proto: tcp, port: 8080}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"EGRESS_CONFIG=" + conf, "EGRESS_DB=" + db, "EGRESS_NETNS=" + pair.Client.Name,
		"EGRESS_RESOLV_CONF=/etc/netns/" + pair.Client.Name + "/resolv.conf", "EGRESS_NFLOG_GROUP=89"}
	enforce := filepath.Join(bin, "egress-enforce")
	if out, err := command(enforce, env, "apply", "--mode", "audit").CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}

	watch := startServing(t, enforce, env, "msg=watching", "watch", "--quiet", "--metrics-refresh", "100ms")
	followPins := lab.NewBPFFS(t)
	follow := startServing(t, enforce, env, "msg=following", "follow", "--cgroup", lab.NewCgroup(t).Path, "--pin-dir", followPins)
	// The name check shares the follower's pins: it exports whether the
	// follower's map of followed destinations is still the one it reads.
	namecheck := startServing(t, enforce, env, "destinations set", "namecheck", "--cgroup", lab.NewCgroup(t).Path, "--pin-dir", followPins)
	learn := startServing(t, filepath.Join(bin, "egress-learn"), nil, "msg=learning", "run", "--cgroup", lab.NewCgroup(t).Path,
		"--db", filepath.Join(dir, "learn.db"))

	// A packet the audit table logs: nobody never reached port 8081.
	nobody := lab.As{UID: 65534, GID: 65534, Netns: pair.Client}
	if out, err := nobody.Run("curl", "-sS", "-o", "/dev/null", "http://"+lab.ServerIP4+":8081/"); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	lab.Await(t, "the monitor to export the logged packet", func() bool {
		_, ok := lab.MetricValue(lab.Scrape(t, watch), "egress_denied_packets_total", map[string]string{"action": "audit", "port": "8081"})
		return ok
	})

	serviceSending(t, watch, pair)
	dns := dnsPolicyServing(t, enforce, env, pair)
	// The learner's coverage gauges appear with its first scan, which
	// runs in the background and retries while the new store is busy
	// (under load it missed the scrape once).
	lab.Await(t, "the learner's first coverage scan", func() bool {
		_, ok := lab.MetricValue(lab.Scrape(t, learn), "egress_learn_coverage_unseen_jobs", nil)
		return ok
	})

	exported := map[string][]string{}
	for _, url := range []string{watch, follow, learn, dns, namecheck} {
		for name, labels := range sampleNames(lab.Scrape(t, url)) {
			exported[name] = append(exported[name], labels...)
		}
	}
	for _, want := range []string{"egress_table_present", "egress_denied_packets_total", "egress_follow_latency_seconds", "egress_learn_flows", "egress_build_info", "egress_namecheck_followed_map_replaced"} {
		if _, ok := exported[want]; !ok {
			t.Errorf("%s is not served (served: %v)", want, slices.Sorted(maps.Keys(exported)))
		}
	}
	rq, recorded := ruleQueries(t)
	for _, p := range exportProblems(append(rq, dashboardQueries(t)...), recorded, exported) {
		t.Error(p)
	}
}

// sampleNames maps each sample name the families expose (a summary's or
// histogram's _sum, _count and _bucket too) to the label names it has.
func sampleNames(fams map[string]*dto.MetricFamily) map[string][]string {
	out := map[string][]string{}
	for name, f := range fams {
		var labels []string
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if !slices.Contains(labels, lp.GetName()) {
					labels = append(labels, lp.GetName())
				}
			}
		}
		out[name] = labels
		switch f.GetType() {
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = labels, labels
			out[name] = append(slices.Clone(labels), "quantile")
		case dto.MetricType_HISTOGRAM:
			out[name+"_sum"], out[name+"_count"] = labels, labels
			out[name+"_bucket"] = append(slices.Clone(labels), "le")
		}
	}
	return out
}

func command(bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// startServing starts a command with --metrics-addr on a free port, waits
// for its ready line, and returns its metrics URL; t.Cleanup stops it.
func startServing(t *testing.T, bin string, env []string, ready string, args ...string) string {
	t.Helper()
	addr := lab.FreeAddr(t)
	cmd := command(bin, env, append(args, "--metrics-addr", addr)...)
	stderr := &lab.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(lab.Patience):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s %s stderr:\n%s", filepath.Base(bin), args[0], stderr.String())
		}
	})
	lab.Await(t, filepath.Base(bin)+" "+args[0]+" to be ready", func() bool {
		select {
		case <-exited:
			return true
		default:
			return strings.Contains(stderr.String(), ready)
		}
	})
	if !strings.Contains(stderr.String(), ready) {
		t.Fatalf("%s %s exited:\n%s", filepath.Base(bin), args[0], stderr.String())
	}
	return "http://" + addr + "/metrics"
}

// dnsPolicyServing attaches a DNS policy in audit to a cgroup of its own,
// starts dns-policy watch, and makes nobody ask for 50 names under one
// parent: every metric of the watch is then served.
func dnsPolicyServing(t *testing.T, enforce string, env []string, pair *lab.Pair) string {
	t.Helper()
	cg, pins := lab.NewCgroup(t), lab.NewBPFFS(t)
	where := []string{"--cgroup", cg.Path, "--pin-dir", pins}
	env = append(env, "EGRESS_DNS_POLICY=audit")
	if out, err := command(enforce, env, append([]string{"dns-policy", "apply"}, where...)...).CombinedOutput(); err != nil {
		t.Fatalf("dns-policy apply: %v\n%s", err, out)
	}
	url := startServing(t, enforce, env, "watching dns policy reports", append([]string{"dns-policy", "watch"}, where...)...)
	nobody := lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg}
	if out, err := nobody.Run("sh", "-c", "for i in $(seq 50); do dig +time=1 +tries=1 @"+lab.ServerIP4+" x$i.t.evil >/dev/null & done; wait"); err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	lab.Await(t, "the tunnel signature in the metrics", func() bool {
		_, ok := lab.MetricValue(lab.Scrape(t, url), "egress_dns_tunnel_suspected_total", map[string]string{"parent": "t.evil"})
		return ok
	})
	return url
}

// serviceSending makes nobody send UDP to an unlearned port from a
// service's cgroup (web.service) until the watch at url counts a packet
// for that service: the watch names a packet's service through its
// socket, so the sender keeps its socket and keeps sending.
func serviceSending(t *testing.T, url string, pair *lab.Pair) {
	t.Helper()
	lab.ListenUDP(t, pair.Server, lab.ServerIP4+":9999")
	svc := lab.NewCgroup(t).Child(t, "web.service")
	ctx, stop := context.WithCancel(context.Background())
	sender := lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: svc}.Command(ctx, "sh", "-c",
		"while :; do echo x; sleep 0.2; done | socat - UDP:"+lab.ServerIP4+":9999")
	if err := sender.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stop(); _ = sender.Wait() }()
	lab.Await(t, "the monitor to count web.service's packets", func() bool {
		_, ok := lab.MetricValue(lab.Scrape(t, url), "egress_denied_packets_by_service_total", map[string]string{"action": "audit", "service": svc.Rel(t)})
		return ok
	})
}
