//go:build linux

// Package lab builds throw-away test hosts for the kernel tests: network
// namespaces joined by veth pairs, child cgroups, servers (dnsmasq, HTTP,
// UDP sinks) inside a namespace, and real clients run as a chosen user
// inside a chosen cgroup and namespace. Everything it creates has a unique
// name and is removed by t.Cleanup, also when the test fails. It never
// touches the host's own network namespace or the root cgroup.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of the two ends of a Pair. Each pair lives in its own
// namespaces, so every pair can use the same ones.
const (
	ServerIP4 = "10.77.0.1"
	ClientIP4 = "10.77.0.2"
	ServerIP6 = "fd77::1"
	ClientIP6 = "fd77::2"
)

// Require skips the test when it cannot run here (not root, or a tool is
// missing), except under CI=true, where it fails instead: CI must run
// every kernel test.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (run as root: it creates network namespaces, cgroups and loads eBPF)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (apt-get install it, or run `make deps`)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true, so this is a failure, not a skip", msg)
	}
	t.Skip(msg)
}

// Unique returns prefix followed by random hex, short enough for an
// interface name when prefix is.
func Unique(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Netns is a named network namespace under /run/netns.
type Netns struct {
	Name string
}

// Path is the namespace's file.
func (n *Netns) Path() string { return "/run/netns/" + n.Name }

// NewNetns creates a namespace with loopback up; t.Cleanup deletes it.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	n := &Netns{Name: Unique("egt")}
	MustRun(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", n.Name).Run()
		_ = os.RemoveAll("/etc/netns/" + n.Name)
	})
	MustRun(t, "ip", "-n", n.Name, "link", "set", "lo", "up")
	return n
}

// SetResolver makes `ip netns exec` processes of the namespace use server
// as their DNS resolver (through /etc/netns/NAME/resolv.conf).
func (n *Netns) SetResolver(t testing.TB, server string) {
	t.Helper()
	dir := "/etc/netns/" + n.Name
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+server+"\noptions timeout:1 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Pair is two namespaces joined by a veth pair: a server side and a client
// side, with IPv4 and IPv6 addresses.
type Pair struct {
	Server, Client *Netns
}

// NewPair builds a server and a client namespace joined by veth.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	p := &Pair{Server: NewNetns(t), Client: NewNetns(t)}
	MustRun(t, "ip", "-n", p.Server.Name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", p.Client.Name)
	for _, c := range []struct {
		ns       *Netns
		dev      string
		ip4, ip6 string
	}{
		{p.Server, "veth0", ServerIP4, ServerIP6},
		{p.Client, "veth1", ClientIP4, ClientIP6},
	} {
		MustRun(t, "ip", "-n", c.ns.Name, "addr", "add", c.ip4+"/24", "dev", c.dev)
		MustRun(t, "ip", "-n", c.ns.Name, "addr", "add", c.ip6+"/64", "dev", c.dev, "nodad")
		MustRun(t, "ip", "-n", c.ns.Name, "link", "set", c.dev, "up")
	}
	p.Client.SetResolver(t, ServerIP4)
	return p
}

// Cgroup is a child cgroup of the cgroup2 root.
type Cgroup struct {
	Path string
	fd   *os.File
}

// NewCgroup creates a uniquely named child cgroup of the cgroup2 mount;
// t.Cleanup kills what runs in it and removes it.
func NewCgroup(t testing.TB) *Cgroup {
	t.Helper()
	root, err := cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	return newCgroupAt(t, filepath.Join(root, Unique("egress-test-")))
}

// newCgroupAt creates the cgroup directory path; t.Cleanup kills what
// runs in it and removes it.
func newCgroupAt(t testing.TB, path string) *Cgroup {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	fd, err := os.Open(path)
	if err != nil {
		_ = os.Remove(path)
		t.Fatal(err)
	}
	cg := &Cgroup{Path: path, fd: fd}
	t.Cleanup(func() { cg.remove(t) })
	return cg
}

func (c *Cgroup) remove(t testing.TB) {
	_ = c.fd.Close()
	_ = os.WriteFile(filepath.Join(c.Path, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(c.Path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", c.Path, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FD is an open descriptor of the cgroup directory, for clone3.
func (c *Cgroup) FD() int { return int(c.fd.Fd()) }

func cgroup2Root() (string, error) {
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "cgroup2" {
			return f[1], nil
		}
	}
	return "", errors.New("no cgroup2 mount")
}

// MustRun runs a command and fails the test with its output if it fails.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// As says who runs a client and where.
type As struct {
	UID, GID uint32
	Netns    *Netns
	Cgroup   *Cgroup // nil: stay in the test's own cgroup
	// Caps are capabilities the client keeps as ambient ones (e.g.
	// "net_raw"), as a container or a ping helper would hold them.
	Caps []string
}

// Command prepares args to run as a.UID inside a.Netns (through
// `ip netns exec`, which gives it the namespace's resolv.conf) and a.Cgroup
// (joined at clone, before the namespace is entered).
func (a As) Command(ctx context.Context, args ...string) *exec.Cmd {
	full := []string{"netns", "exec", a.Netns.Name, "setpriv",
		"--reuid=" + strconv.Itoa(int(a.UID)), "--regid=" + strconv.Itoa(int(a.GID)), "--clear-groups"}
	if len(a.Caps) > 0 {
		caps := "+" + strings.Join(a.Caps, ",+")
		full = append(full, "--inh-caps="+caps, "--ambient-caps="+caps)
	}
	full = append(full, "--")
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	if a.Cgroup != nil {
		cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: a.Cgroup.FD()}
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}
	return cmd
}

// Run runs a client to completion (at most Patience) and returns its output.
func (a As) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	var out bytes.Buffer
	cmd := a.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// MustRun runs a client and fails the test if it fails.
func (a As) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := a.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Start starts a long-running process inside ns (as root, in the test's
// cgroup); t.Cleanup stops it.
func Start(t testing.TB, ns *Netns, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && out.Len() > 0 {
			t.Logf("%s output:\n%s", args[0], out.String())
		}
	})
	return cmd
}

// DNSRecord is a name served by StartDNS: an address record, or a CNAME
// when Target is set.
type DNSRecord struct {
	Name   string
	IPs    []string
	Target string
	TTL    int
}

// StartDNS runs dnsmasq on port 53 of listen inside ns, serving only the
// given records (no upstream, no host files), and waits until it answers.
func StartDNS(t testing.TB, ns *Netns, listen []string, records ...DNSRecord) {
	t.Helper()
	conf := []string{"no-resolv", "no-hosts", "bind-interfaces", "user=root", "group=root", "pid-file=", "log-queries", "local=/lab/"}
	for _, l := range listen {
		conf = append(conf, "listen-address="+l)
	}
	for _, r := range records {
		ttl := r.TTL
		if ttl == 0 {
			ttl = 60
		}
		if r.Target != "" {
			conf = append(conf, fmt.Sprintf("cname=%s,%s,%d", r.Name, r.Target, ttl))
			continue
		}
		conf = append(conf, fmt.Sprintf("host-record=%s,%s,%d", r.Name, strings.Join(r.IPs, ","), ttl))
	}
	file := filepath.Join(t.TempDir(), "dnsmasq.conf")
	if err := os.WriteFile(file, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	Start(t, ns, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file="+file)
	WaitUDP(t, ns, net.JoinHostPort(listen[0], "53"))
}

// WaitUDP waits until a DNS query to addr inside ns gets any answer.
func WaitUDP(t testing.TB, ns *Netns, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	answered := Eventually(func() bool {
		return exec.Command("ip", "netns", "exec", ns.Name, "dig", "+time=1", "+tries=1", "-p", port, "@"+host, "ready.lab").Run() == nil
	})
	if !answered {
		t.Fatalf("no DNS server answered on %s within %v", addr, Patience)
	}
}

// InNetns runs fn on an OS thread that has entered ns. Sockets fn creates
// belong to ns and may be used from any goroutine afterwards. The thread
// is thrown away after fn.
func InNetns(ns *Netns, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		f, err := os.Open(ns.Path())
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ServeHTTP runs an HTTP server on addr inside ns that answers "ok";
// t.Cleanup stops it.
func ServeHTTP(t testing.TB, ns *Netns, addr string) {
	t.Helper()
	var l net.Listener
	err := InNetns(ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// ListenUDP opens a UDP socket on addr inside ns that discards what it
// receives; t.Cleanup closes it.
func ListenUDP(t testing.TB, ns *Netns, addr string) {
	t.Helper()
	ServeUDP(t, ns, "udp", addr, nil)
}

// ServeUDP opens a socket of network (udp, udp4, udp6) on addr inside ns
// and passes each datagram it receives to got (nil: they are discarded);
// t.Cleanup closes it.
func ServeUDP(t testing.TB, ns *Netns, network, addr string, got func([]byte)) {
	t.Helper()
	var c net.PacketConn
	err := InNetns(ns, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.Name, err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if got != nil {
				got(buf[:n])
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close() })
}

// Buffer is a bytes.Buffer safe to read while a process writes to it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Patience bounds every wait of the lab. It is generous on purpose: a slow
// or busy machine makes a test slower, never makes it fail. It is no speed
// claim: each wait ends as soon as its signal holds.
const Patience = 60 * time.Second

// Eventually polls cond, with growing pauses, until it holds or Patience
// has passed, and says whether it held.
func Eventually(cond func() bool) bool {
	deadline := time.Now().Add(Patience)
	pause := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
	return true
}

// WaitFor polls cond until it holds, failing the test after Patience.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	Await(t, "a condition", cond)
}

// Await polls cond until it holds, failing the test after Patience with
// what it was waiting for.
func Await(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Eventually(cond) {
		t.Fatalf("waited %v for %s", Patience, what)
	}
}

// Blocked runs a client whose traffic should be dropped, for as long as it
// takes to see the drop: it returns nil once dropped reports it, and then
// stops the client. It returns an error when the client succeeds, or when
// no drop is seen within Patience: a client that failed for another reason
// (a name that did not resolve, a client that gave up early) proves
// nothing. No client time limit is involved, so a slow machine cannot make
// a passing attempt look blocked. dropped must hold only after a drop, not
// after a packet that may have passed: for TCP, a drop counter that grew by
// two (the SYN and the SYN sent again for want of an answer), not by one.
func (a As) Blocked(dropped func() bool, args ...string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out Buffer
	cmd := a.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second // a child of the client must not hold the output open
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	var exitErr error
	exited := false
	seen := Eventually(func() bool {
		if !exited {
			select {
			case exitErr = <-waitc:
				exited = true
			default:
			}
		}
		if exited && exitErr == nil {
			return true // it got through: nothing more to wait for
		}
		return dropped()
	})
	cancel()
	if !exited {
		exitErr = <-waitc
	}
	switch {
	case exitErr == nil:
		return fmt.Errorf("%s got through: %s", strings.Join(args, " "), out.String())
	case !seen:
		return fmt.Errorf("%s: no drop seen in %v (client: %v: %s)", strings.Join(args, " "), Patience, exitErr, out.String())
	}
	return nil
}
