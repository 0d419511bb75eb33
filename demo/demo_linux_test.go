//go:build linux

// Package demo holds the built-in demo (demo.sh, run by `make demo`); its
// test runs the script as a new user would, so that the README's first
// command cannot break unnoticed.
package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestDemo builds both tools, runs demo.sh with them and checks what it
// shows: the learned requests answered, the unlearned ones blocked, the
// confirm, the counters and the monitor's summary. The script removes its
// lab (namespaces, cgroup, store) on exit, failed or not.
func TestDemo(t *testing.T) {
	lab.Require(t, "dnsmasq", "socat", "curl", "dig", "nft")
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "../cmd/egress-learn", "../cmd/egress-enforce")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the tools: %v\n%s", err, out)
	}
	script, err := filepath.Abs("demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "BIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	lab.WantAll(t, "the demo's output", string(out),
		"hello from the demo server",
		"-> blocked: nobody never used web.demo.lan over IPv6",
		"-> blocked: root never used api.demo.lan",
		"confirmed generation 2 (enforce mode); it stays",
		"dropped by the default rules (no allow rule matched):",
		"most denied destinations:",
		"== done: the lab is removed on exit",
	)
	// Nothing of the lab is left: the store's folder, the namespaces, the
	// cgroup (a confirm guard still polling re-created the store after
	// the script removed it, on every run).
	text := string(out)
	db := regexp.MustCompile(`--db (\S+)/baseline\.db`).FindStringSubmatch(text)
	where := regexp.MustCompile(`namespaces (\S+) \(server\) and (\S+) \(client\), cgroup (\S+)`).FindStringSubmatch(text)
	if db == nil || where == nil {
		t.Fatalf("the demo no longer says where its store and lab are:\n%s", text)
	}
	for _, p := range []string{db[1], "/run/netns/" + where[1], "/run/netns/" + where[2], "/etc/netns/" + where[2], where[3]} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the demo left %s", p)
		}
	}
}
