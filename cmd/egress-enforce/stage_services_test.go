package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestStagedServicesEndToEnd is staged enforcement by service through the
// tools: two services of one user learned the same destination (the
// report shows both beside the user); apply
// --enforce-services a drops a's unlearned destination and only audits
// b's; status and history say who is enforced; a restart of a without a
// keeper is said loudly by status (a is audited until its id is back)
// and by watch when a packet of a is audited,
// and "egress-enforce services" puts the new id in, so a is enforced
// again; a rollback puts the staging back.
func TestStagedServicesEndToEnd(t *testing.T) {
	h := newServiceHost(t, "match: user,service\n")
	parent, env, as := h.parent, h.env, h.as
	a, b := parent.Child(t, "a.service"), parent.Child(t, "b.service")

	learner, lerr := startLearner(t, env, "--cgroup", parent.Path, "--flush-interval", "200ms")
	as(a).MustRun(t, "curl", "-sS", url8080)
	as(b).MustRun(t, "curl", "-sS", url8080)
	stopLearner(t, learner, lerr)
	// The report shows the services beside the user.
	lab.WantAll(t, "egress-learn report", mustRun(t, learnBin, env, "report"), "SERVICES", a.Rel(t)+","+b.Rel(t))
	var rows []struct {
		User     string   `json:"user"`
		Services []string `json:"services"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, learnBin, env, "report", "--json")), &rows); err != nil || len(rows) != 1 ||
		!slices.Equal(rows[0].Services, []string{a.Rel(t), b.Rel(t)}) {
		t.Errorf("report --json: %+v %v", rows, err)
	}

	out := mustRun(t, enforceBin, env, "apply", "--mode", "enforce", "--audit-services", parent.Rel(t)+"/gone.service")
	lab.WantAll(t, "apply with a staged service not running", out, "staged service "+parent.Rel(t)+"/gone.service is not running")
	mustFail(t, enforceBin, env, []string{"need per-service rules"}, "apply", "--mode", "enforce", "--match", "user", "--enforce-services", a.Rel(t))
	mustFail(t, enforceBin, env, []string{"--enforce-services", "not a service path"}, "apply", "--mode", "enforce", "--enforce-services", "a/../b.service")
	out = mustRun(t, enforceBin, env, "apply", "--mode", "enforce", "--enforce-services", a.Rel(t))
	lab.WantAll(t, "apply", out, "staged mode", "enforced services: "+a.Rel(t), "egress-enforce services")
	if err := reach(as(a), url8080); err != nil {
		t.Errorf("a.service to what it learned: %v", err)
	}
	if err := blocked(t, as(a), url8081); err != nil {
		t.Errorf("a.service (enforced) to its unlearned destination: %v", err)
	}
	if err := reach(as(b), url8081); err != nil {
		t.Errorf("b.service (audited) to its unlearned destination: %v", err)
	}
	lab.WantAll(t, "status", mustRun(t, enforceBin, env, "status"), "service "+a.Rel(t)+": enforced (staged: enforce)")
	lab.WantAll(t, "history", mustRun(t, enforceBin, env, "history"), "(enforce "+a.Rel(t)+")")

	a.Recreate(t) // restarted, no keeper
	stale := mustRun(t, enforceBin, env, "status")
	lab.WantAll(t, "status after a restart without a keeper", stale, "WARNING: service "+a.Rel(t)+": audited (staged: enforce): NOT ENFORCED", "cgroup-id:")
	var st status
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "status", "--json")), &st); err != nil || len(st.Staged) != 1 || !st.Staged[0].Stale {
		t.Errorf("status --json after the restart: %+v %v", st.Staged, err)
	}

	// watch says so too, as soon as an audited packet of a comes: a
	// client holds its connection until the error is logged (the
	// packet's service is found by its socket).
	_, _, werr := start(t, env, enforceBin, "watch", "--quiet")
	lab.Await(t, "watch", func() bool { return strings.Contains(werr.String(), "msg=watching") })
	ctx, cancel := context.WithCancel(context.Background())
	holder := as(a).Command(ctx, "bash", "-c", "exec 3<>/dev/tcp/"+lab.ServerIP4+"/8081 && exec sleep 600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	lab.Await(t, "watch to say the enforced service was audited", func() bool {
		return strings.Contains(werr.String(), "level=ERROR msg=\"a service staged for enforcement was only audited") &&
			strings.Contains(werr.String(), "service="+a.Rel(t))
	})
	cancel()
	_ = holder.Wait()

	_, _, serr := start(t, env, enforceBin, "services")
	lab.Await(t, "the keeper to put a's new id in", func() bool {
		return strings.Contains(mustRun(t, enforceBin, env, "status"), "service "+a.Rel(t)+": enforced (staged: enforce)\n")
	})
	if strings.Contains(serr.String(), "level=ERROR") {
		t.Errorf("services:\n%s", serr.String())
	}
	if err := blocked(t, as(a), url8081); err != nil {
		t.Errorf("a.service after its restart, with the keeper: %v", err)
	}

	mustRun(t, enforceBin, env, "apply", "--mode", "enforce", "--audit-services", b.Rel(t))
	lab.WantAll(t, "status", mustRun(t, enforceBin, env, "status"), "service "+b.Rel(t)+": audited (staged: audit)")
	mustRun(t, enforceBin, env, "rollback")
	lab.WantAll(t, "status after the rollback", mustRun(t, enforceBin, env, "status"), "service "+a.Rel(t)+": enforced (staged: enforce)")
	if err := blocked(t, as(a), url8081); err != nil {
		t.Errorf("a.service after the rollback: %v", err)
	}
	if err := reach(as(b), url8081); err != nil {
		t.Errorf("b.service after the rollback: %v", err)
	}
}

// serviceHost is a client namespace whose server answers HTTP on 8080
// and 8081 and DNS, a parent cgroup for the services to stand in for
// units, and the tools' configuration (db, resolv_conf, netns, and
// extra lines).
type serviceHost struct {
	pair   *lab.Pair
	parent *lab.Cgroup
	env    []string
}

const (
	url8080 = "http://" + lab.ServerIP4 + ":8080/"
	url8081 = "http://" + lab.ServerIP4 + ":8081/"
)

func newServiceHost(t *testing.T, extra string) *serviceHost {
	t.Helper()
	lab.Require(t, "nft", "curl", "dnsmasq")
	pair := lab.NewPair(t)
	lab.ServeHTTP(t, pair.Server, ":8080")
	lab.ServeHTTP(t, pair.Server, ":8081")
	lab.StartDNS(t, pair.Server, []string{lab.ServerIP4})
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	resolv := "/etc/netns/" + pair.Client.Name + "/resolv.conf"
	if err := os.WriteFile(conf, []byte("db: "+filepath.Join(dir, "b.db")+"\nresolv_conf: "+resolv+"\nnetns: "+pair.Client.Name+"\n"+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return &serviceHost{pair: pair, parent: lab.NewCgroup(t), env: []string{"EGRESS_CONFIG=" + conf}}
}

// as is nobody in the client namespace and cg.
func (h *serviceHost) as(cg *lab.Cgroup) lab.As {
	return lab.As{UID: 65534, GID: 65534, Netns: h.pair.Client, Cgroup: cg}
}
