//go:build linux

package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// units are the systemd units the package installs.
var units = []string{"egress-learn.service", "egress-enforce-watch.service", "egress-enforce-follow.service", "egress-enforce-dns-policy.service",
	"egress-enforce-namecheck.service", "egress-enforce-restore.service", "egress-reconcile.service", "egress-reconcile.timer"}

// TestDebPackage builds the package with "make deb" twice (two versions),
// installs the first with dpkg into an empty root of its own (the
// maintainer scripts run without chroot, with DPKG_ROOT, as in a
// bootstrap), then checks what an operator gets: the tools print their
// version, the units pass systemd-analyze verify, man shows the pages,
// bash completes, /var/lib/egress is 0700. It upgrades to the second
// (the operator's configuration and the store stay), removes (the tools
// go, the configuration and the store stay) and purges (the store stays).
func TestDebPackage(t *testing.T) {
	lab.Require(t, "dpkg", "dpkg-deb", "make", "systemd-analyze", "man", "bash", "gzip")
	dir := t.TempDir()
	deb1, deb2 := makeDeb(t, dir, "0.0.1+test1"), makeDeb(t, dir, "0.0.2+test2")
	checkDebMeta(t, deb1, "0.0.1+test1")

	root := filepath.Join(dir, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/systemd/system/multi-user.target.wants"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := dpkgIn(t, root, "-i", deb1)
	for _, want := range []string{"Nothing is enabled or started", "systemctl enable --now egress-learn", "egress-enforce apply --mode audit"} {
		if !strings.Contains(out, want) {
			t.Errorf("install did not print %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/egress")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/egress: want a directory of mode 0700: %v", describe(fi, err))
	}
	checkInstalled(t, root, "0.0.1+test1")

	// The operator's state: a store, an edited configuration, an enabled unit.
	store := filepath.Join(root, "var/lib/egress/baseline.db")
	mustWrite(t, store, "the baseline")
	conf := filepath.Join(root, "etc/egress/config.yaml")
	mustWrite(t, conf, "mode: audit\nlog_level: debug\n")
	link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/egress-learn.service")
	if err := os.Symlink("/lib/systemd/system/egress-learn.service", link); err != nil {
		t.Fatal(err)
	}

	if out := dpkgIn(t, root, "-i", deb2); !strings.Contains(out, "upgraded from 0.0.1+test1") {
		t.Errorf("upgrade:\n%s", out)
	}
	checkInstalled(t, root, "0.0.2+test2")
	if data, _ := os.ReadFile(conf); string(data) != "mode: audit\nlog_level: debug\n" {
		t.Errorf("the upgrade changed the operator's configuration: %q", data)
	}

	dpkgIn(t, root, "-r", "egress")
	for _, gone := range []string{"usr/bin/egress-enforce", "usr/bin/egress-learn", "lib/systemd/system/egress-learn.service",
		"usr/share/man/man8/egress-enforce.8.gz"} {
		if _, err := os.Stat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("after dpkg -r, /%s: %v", gone, err)
		}
	}
	for _, kept := range []string{store, conf} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("dpkg -r removed %s: %v", kept, err)
		}
	}

	if out := dpkgIn(t, root, "--purge", "egress"); !strings.Contains(out, "/var/lib/egress") {
		t.Errorf("purge does not say the store is kept:\n%s", out)
	}
	if data, err := os.ReadFile(store); err != nil || string(data) != "the baseline" {
		t.Errorf("purge touched the store: %q %v", data, err)
	}
	for _, gone := range []string{conf, link} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("after purge, %s: %v", gone, err)
		}
	}
}

// makeDeb runs "make deb" for version and returns the package's path.
func makeDeb(t *testing.T, dir, version string) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-C", "..", "deb", "VERSION="+version, "COMMIT="+testCommit,
		"DEB_OUT="+dir, "DEB_STAGE="+filepath.Join(dir, "stage-"+version), "DIST="+filepath.Join(dir, "dist-"+version))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "egress_"+version+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v:\n%s", debs, out)
	}
	return debs[0]
}

// checkDebMeta: the control fields, the conffile, and every file root-owned
// and in its place.
func checkDebMeta(t *testing.T, deb, version string) {
	t.Helper()
	field := func(name string) string {
		out, err := exec.Command("dpkg-deb", "--field", deb, name).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	arch, _ := exec.Command("dpkg", "--print-architecture").Output()
	if field("Package") != "egress" || field("Version") != version || field("Architecture") != strings.TrimSpace(string(arch)) ||
		!strings.HasPrefix(field("Depends"), "libc6") {
		t.Errorf("control: %s %s %s depends %q", field("Package"), field("Version"), field("Architecture"), field("Depends"))
	}
	if filepath.Base(deb) != "egress_"+version+"_"+strings.TrimSpace(string(arch))+".deb" {
		t.Errorf("file name %s", filepath.Base(deb))
	}
	ctl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); string(data) != "/etc/egress/config.yaml\n" {
		t.Errorf("conffiles %q", data)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if out, err := exec.Command("sh", "-n", filepath.Join(ctl, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
	list, err := exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "root/root" {
			t.Errorf("not root-owned: %s", line)
			continue
		}
		files = append(files, strings.TrimPrefix(f[5], "."))
	}
	want := []string{"/usr/bin/egress-learn", "/usr/bin/egress-enforce", "/etc/egress/config.yaml",
		"/usr/share/man/man8/egress-learn.8.gz", "/usr/share/man/man8/egress-enforce.8.gz", "/usr/share/man/man8/egress-enforce-apply.8.gz",
		"/usr/share/bash-completion/completions/egress-enforce", "/usr/share/bash-completion/completions/egress-learn",
		"/usr/share/zsh/vendor-completions/_egress-enforce", "/usr/share/zsh/vendor-completions/_egress-learn",
		"/usr/share/fish/vendor_completions.d/egress-enforce.fish", "/usr/share/fish/vendor_completions.d/egress-learn.fish",
		"/usr/share/doc/egress/copyright", "/usr/share/egress/grafana/egress.json", "/usr/share/egress/prometheus/egress-rules.yml"}
	for _, u := range units {
		want = append(want, "/lib/systemd/system/"+u)
	}
	for _, w := range want {
		if !slices.Contains(files, w) {
			t.Errorf("the package has no %s", w)
		}
	}
	for _, f := range files {
		if strings.HasPrefix(f, "/var/lib/egress") {
			t.Errorf("the package ships %s: dpkg -r would remove the store's directory", f)
		}
	}
}

// checkInstalled: what an operator runs after installing version.
func checkInstalled(t *testing.T, root, version string) {
	t.Helper()
	for _, tool := range []string{"egress-learn", "egress-enforce"} {
		out, err := exec.Command(filepath.Join(root, "usr/bin", tool), "--version").CombinedOutput()
		if want := tool + " " + version + " (commit " + testCommit; err != nil || !strings.HasPrefix(string(out), want) {
			t.Errorf("%s --version: %v %q, want %q...", tool, err, out, want)
		}
	}
	verifyInstalledUnits(t, root)
	pages, _ := filepath.Glob(filepath.Join(root, "usr/share/man/man8/*.8.gz"))
	if len(pages) < 2+3+15 {
		t.Errorf("%d man pages: %v", len(pages), pages)
	}
	for _, path := range pages {
		page := strings.TrimSuffix(filepath.Base(path), ".8.gz")
		// Looked up by name, as "man egress-enforce" does.
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-M", filepath.Join(root, "usr/share/man"), "8", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 || !strings.Contains(stdout.String(), "SYNOPSIS") ||
			!strings.Contains(stdout.String(), "egress "+version) {
			t.Errorf("man 8 %s: %v\nstderr: %s\nstdout: %.400s", page, err, stderr.String(), stdout.String())
		}
	}
	checkCompletion(t, root)
}

// verifyInstalledUnits runs systemd-analyze verify on the installed units,
// their binaries' paths moved into root (verify checks the executables).
func verifyInstalledUnits(t *testing.T, root string) {
	t.Helper()
	dir := t.TempDir()
	var copies []string
	for _, u := range units {
		data, err := os.ReadFile(filepath.Join(root, "lib/systemd/system", u))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "/usr/local/") {
			t.Errorf("installed %s still names /usr/local", u)
		}
		c := filepath.Join(dir, u)
		mustWrite(t, c, strings.ReplaceAll(string(data), "/usr/bin/egress-", root+"/usr/bin/egress-"))
		copies = append(copies, c)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, copies...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, out)
	}
}

// checkCompletion: bash completes a subcommand and a flag through the
// installed completion and binary.
func checkCompletion(t *testing.T, root string) {
	t.Helper()
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (make deps installs bash-completion)", bashCompletion, err)
		}
		t.Logf("no %s: completion not tried", bashCompletion)
		return
	}
	for line, want := range map[string]string{"egress-enforce ap": "apply", "egress-enforce apply --mo": "--mode", "egress-learn ru": "run"} {
		words := strings.Fields(line)
		script := `source ` + bashCompletion + `; source "$1"; COMP_WORDS=(` + line + `); COMP_CWORD=` + strconv.Itoa(len(words)-1) +
			`; COMP_LINE="` + line + `"; COMP_POINT=${#COMP_LINE}; __start_` + words[0] + `; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", "-c", script, "bash", filepath.Join(root, "usr/share/bash-completion/completions", words[0]))
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "usr/bin")+":"+os.Getenv("PATH"))
		out, err := cmd.Output()
		if err != nil || !slices.Contains(strings.Fields(string(out)), want) {
			t.Errorf("bash completion of %q: %v %q, want %s", line, err, out, want)
		}
	}
	for _, f := range []string{"usr/share/zsh/vendor-completions/_egress-enforce", "usr/share/fish/vendor_completions.d/egress-enforce.fish"} {
		if data, err := os.ReadFile(filepath.Join(root, f)); err != nil || !strings.Contains(string(data), "egress-enforce") {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// dpkgIn runs dpkg on root, with the maintainer scripts outside a chroot.
func dpkgIn(t *testing.T, root string, args ...string) string {
	t.Helper()
	all := append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)
	out, err := exec.Command("dpkg", all...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMakeInstall: make install for another distribution puts everything
// under PREFIX (the units run the binaries there), keeps an existing
// configuration; make uninstall removes the files and keeps the
// configuration.
func TestMakeInstall(t *testing.T) {
	lab.Require(t, "make", "gzip")
	dir := t.TempDir()
	dest := filepath.Join(dir, "dest")
	conf := filepath.Join(dest, "etc/egress/config.yaml")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, conf, "mode: enforce\n")
	vars := []string{"DESTDIR=" + dest, "PREFIX=/opt/egress", "VERSION=" + testVersion, "COMMIT=" + testCommit, "DIST=" + filepath.Join(dir, "dist")}
	run := func(target string) {
		t.Helper()
		if out, err := exec.Command("make", append([]string{"--no-print-directory", "-C", "..", target}, vars...)...).CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	run("install")
	files := []string{"opt/egress/bin/egress-enforce", "opt/egress/bin/egress-learn", "opt/egress/share/man/man8/egress-enforce.8.gz",
		"opt/egress/share/bash-completion/completions/egress-enforce", "opt/egress/share/zsh/site-functions/_egress-learn",
		"opt/egress/share/fish/vendor_completions.d/egress-learn.fish", "opt/egress/share/egress/grafana/egress.json"}
	for _, u := range units {
		files = append(files, "opt/egress/lib/systemd/system/"+u)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "opt/egress/lib/systemd/system/egress-enforce-watch.service"))
	if !strings.Contains(string(unit), "ExecStart=/opt/egress/bin/egress-enforce watch") {
		t.Errorf("the installed unit does not run the installed binary:\n%s", unit)
	}
	if data, _ := os.ReadFile(conf); string(data) != "mode: enforce\n" {
		t.Errorf("make install replaced the configuration: %q", data)
	}
	run("uninstall")
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dest, f)); !os.IsNotExist(err) {
			t.Errorf("after make uninstall, %s: %v", f, err)
		}
	}
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("make uninstall removed the configuration: %v", err)
	}
}

func describe(fi os.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fi.Mode().String()
}
