package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestProcessIsItsExecutable (issue 11, item 8): the kernel's comm is cut
// to 15 characters and a process may set it ("npm view expres" is node).
// The learner records the name of the file each process runs, and the
// comm beside it where they differ: a copy of curl with a long name, and
// a bash that renames itself before it connects over TCP and over
// connected UDP (counted at its first datagram, in the egress hook).
// Before, the report said "curl-with-a-lon" and "npm view expres".
func TestProcessIsItsExecutable(t *testing.T) {
	lab.Require(t, "curl", "bash")
	l := startLearner(t)
	lab.ServeHTTP(t, l.pair.Server, ":8081")
	lab.ListenUDP(t, l.pair.Server, ":9999")
	long := longNamedCurl(t)
	l.client.MustRun(t, long, "-sS", "--max-time", "30", fmt.Sprintf("http://%s:8080/", lab.ServerIP4))
	rename := `printf 'npm view express' > /proc/self/comm; exec 3<>/dev/tcp/%s/8081; exec 4<>/dev/udp/%s/9999; echo x >&4`
	l.client.MustRun(t, "bash", "-c", fmt.Sprintf(rename, lab.ServerIP4, lab.ServerIP4))
	l.stop(t)

	out, stderr, err := runCLI(nil, "report", "--db", l.db, "--json")
	if err != nil {
		t.Fatalf("report: %v\n%s", err, stderr)
	}
	var rows []processRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	npm := []processComm{{Exe: "bash", Comm: "npm view expres"}}
	for _, c := range []struct {
		proto string
		port  uint16
		exe   string
		comms []processComm
	}{
		{"tcp", 8080, filepath.Base(long), []processComm{}},
		{"tcp", 8081, "bash", npm},
		{"udp", 9999, "bash", npm},
	} {
		r := row(rows, 65534, c.proto, c.port)
		if r == nil {
			t.Errorf("no flow %s/%d in the report: %+v", c.proto, c.port, rows)
			continue
		}
		if !slices.Equal(r.Processes, []string{c.exe}) || !slices.Equal(r.Comms, c.comms) {
			t.Errorf("%s/%d: processes %q, comms %+v; want %q and %+v", c.proto, c.port, r.Processes, r.Comms, c.exe, c.comms)
		}
	}
	table, stderr, err := runCLI(nil, "report", "--db", l.db)
	if err != nil {
		t.Fatalf("report: %v\n%s", err, stderr)
	}
	lab.WantAll(t, "report", table, filepath.Base(long), "bash (npm view expres)")
}

// processRow is what the test reads of a report --json row (its own
// type: the test compiles against older code too, and fails there).
type processRow struct {
	UID       uint32        `json:"uid"`
	Proto     string        `json:"proto"`
	Port      uint16        `json:"port"`
	Processes []string      `json:"processes"`
	Comms     []processComm `json:"comms"`
}

type processComm struct {
	Exe  string `json:"exe"`
	Comm string `json:"comm"`
}

// longNamedCurl copies curl to a name longer than a comm, in a directory
// user nobody may enter.
func longNamedCurl(t *testing.T) string {
	t.Helper()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal(err)
	}
	return lab.PublicCopy(t, curl, "curl-with-a-long-name")
}

func row(rows []processRow, uid uint32, proto string, port uint16) *processRow {
	for i, r := range rows {
		if r.UID == uid && r.Proto == proto && r.Port == port {
			return &rows[i]
		}
	}
	return nil
}
