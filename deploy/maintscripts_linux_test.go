//go:build linux

package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// longRunning are the units an upgrade restarts when they ran: every unit
// but the restore unit (that would apply the table again) and the
// reconcile timer and its oneshot.
var longRunning = []string{"egress-learn.service", "egress-enforce-watch.service", "egress-enforce-follow.service",
	"egress-enforce-dns-policy.service", "egress-enforce-namecheck.service"}

// maintScript runs the package's maintainer script with args as dpkg runs
// it on a host where systemd is the init (no DPKG_ROOT): in a private
// mount namespace with /run/systemd/system present, fresh /var/lib and
// /etc/systemd/system, and a systemctl that records its arguments. setup
// runs before the script, after runs once it succeeded. It returns the
// systemctl calls, one per line, and what the script and after printed.
func maintScript(t *testing.T, setup, after, script string, args ...string) (calls []string, out string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "systemctl.log")
	mustWrite(t, log, "")
	stub := filepath.Join(dir, "bin")
	if err := os.Mkdir(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(stub, "systemctl"), "#!/bin/sh\necho \"$*\" >>"+log+"\n")
	if err := os.Chmod(filepath.Join(stub, "systemctl"), 0o755); err != nil {
		t.Fatal(err)
	}
	path, err := filepath.Abs(filepath.Join("debian", script))
	if err != nil {
		t.Fatal(err)
	}
	sh := `set -e
[ -d /etc/systemd/system ]
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /etc/systemd/system
` + setup + `
PATH=` + stub + `:$PATH sh "$@"
` + after
	b, err := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", sh, "sh", path}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, b)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" {
			calls = append(calls, l)
		}
	}
	return calls, string(b)
}

// TestMaintainerScriptsUnderSystemd: what the maintainer scripts ask of
// systemd when it runs, which TestDebPackage's dpkg root cannot show (the
// scripts leave systemd alone there). A first install reloads systemd and
// enables, starts and restarts nothing, and creates /var/lib/egress 0700;
// an upgrade restarts the long-running units that ran, never the restore
// unit; removal stops every unit the package ships; an upgrade's prerm
// stops nothing; purge removes the links of our enabled units only, and
// nothing removes the store.
func TestMaintainerScriptsUnderSystemd(t *testing.T) {
	lab.Require(t, "unshare", "mount", "sh")

	calls, out := maintScript(t, "", "stat -c 'mode %a' /var/lib/egress", "postinst", "configure", "")
	if !slices.Equal(calls, []string{"daemon-reload"}) {
		t.Errorf("first install: systemctl %q, want only daemon-reload (nothing enabled or started)", calls)
	}
	lab.WantAll(t, "first install", out, "Nothing is enabled or started", "mode 700")

	calls, _ = maintScript(t, "", "", "postinst", "configure", "0.0.1")
	want := []string{"daemon-reload"}
	for _, u := range longRunning {
		want = append(want, "try-restart "+u)
	}
	if !slices.Equal(calls, want) {
		t.Errorf("upgrade: systemctl %q, want %q", calls, want)
	}

	calls, _ = maintScript(t, "", "", "prerm", "remove")
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "stop ") {
		t.Fatalf("removal: systemctl %q, want one stop", calls)
	}
	stopped := strings.Fields(strings.TrimPrefix(calls[0], "stop "))
	for _, u := range units {
		if !slices.Contains(stopped, u) {
			t.Errorf("removal does not stop %s (stopped: %v)", u, stopped)
		}
	}
	if calls, _ = maintScript(t, "", "", "prerm", "upgrade", "0.0.2"); len(calls) != 0 {
		t.Errorf("an upgrade's prerm: systemctl %q, want nothing", calls)
	}
	if calls, _ = maintScript(t, "", "", "postrm", "remove"); !slices.Equal(calls, []string{"daemon-reload"}) {
		t.Errorf("postrm remove: systemctl %q", calls)
	}

	// Purge: every unit enabled, and another package's link beside them.
	setup := "mkdir -p /etc/systemd/system/multi-user.target.wants /etc/systemd/system/timers.target.wants /var/lib/egress\n" +
		"echo baseline >/var/lib/egress/baseline.db\n" +
		"ln -s /lib/systemd/system/ssh.service /etc/systemd/system/multi-user.target.wants/ssh.service\n"
	for _, u := range units {
		setup += "ln -s /lib/systemd/system/" + u + " /etc/systemd/system/multi-user.target.wants/" + u + "\n"
	}
	setup += "ln -s /lib/systemd/system/egress-reconcile.timer /etc/systemd/system/timers.target.wants/egress-reconcile.timer\n"
	_, out = maintScript(t, setup, "echo links:; ls /etc/systemd/system/*.wants; cat /var/lib/egress/baseline.db", "postrm", "purge")
	links := strings.Fields(out[strings.Index(out, "links:"):])
	if !slices.Contains(links, "ssh.service") {
		t.Errorf("purge removed another package's link: %s", out)
	}
	for _, u := range units {
		if slices.Contains(links, u) {
			t.Errorf("purge left the link of %s: %s", u, out)
		}
	}
	lab.WantAll(t, "purge", out, "is kept", "baseline")
}
