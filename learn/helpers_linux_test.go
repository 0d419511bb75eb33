//go:build linux

package learn

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// running is a learn.Run in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan runResult
}

type runResult struct {
	sum *Summary
	err error
}

// startRun starts learn.Run and returns once it reports that its programs
// are attached (Config.Ready).
func startRun(t *testing.T, cfg Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan runResult, 1)}
	ready := make(chan struct{})
	cfg.Ready = func() { close(ready) }
	go func() {
		sum, err := Run(ctx, cfg)
		r.done <- runResult{sum, err}
	}()
	t.Cleanup(cancel)
	select {
	case <-ready:
		return r
	case res := <-r.done:
		t.Fatalf("learner stopped before it was ready: %v", res.err)
	case <-time.After(30 * time.Second):
		t.Fatal("learner not ready after 30s")
	}
	return nil
}

// stop ends the run and returns its summary; the run writes everything
// the kernel recorded before it returns.
func (r *running) stop(t *testing.T) *Summary {
	t.Helper()
	r.cancel()
	res := <-r.done
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res.sum
}

// flowsOf reads the store's flows by "uid proto ip:port".
func flowsOf(t *testing.T, db string) (map[string]store.Flow, *store.Snapshot) {
	t.Helper()
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	flows := map[string]store.Flow{}
	for _, f := range snap.Flows {
		k := fmt.Sprintf("%d %s %s", f.UID, ProtoName(f.Proto), netip.AddrPortFrom(f.IP, f.Port))
		flows[k] = f
		t.Logf("flow %s hits=%d names=%v procs=%v", k, f.Hits, f.Hostnames, f.Processes)
	}
	return flows, snap
}

// buildPeer builds testdata/dnspeer where every user may run it.
func buildPeer(t *testing.T) string { return buildTestdata(t, "dnspeer") }

// peer is a running dnspeer; its output lines are its signals.
type peer struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startPeer(t *testing.T, as lab.As, bin string, args ...string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	p := &peer{t: t, cmd: as.Command(ctx, append([]string{bin}, args...)...), lines: make(chan string, 64)}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lab.Buffer{}
	p.cmd.Stderr = stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			p.lines <- s.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		cancel()
		_ = p.cmd.Wait()
		if t.Failed() && stderr.String() != "" {
			t.Logf("dnspeer %v: %s", args, stderr.String())
		}
	})
	return p
}

// expect waits for the next line and checks that it starts with prefix.
func (p *peer) expect(prefix string) string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("dnspeer exited; want %q", prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			p.t.Fatalf("dnspeer said %q, want %q", l, prefix)
		}
		return l
	case <-time.After(20 * time.Second):
		p.t.Fatalf("dnspeer: no %q after 20s", prefix)
	}
	return ""
}

// ready waits for "ready PORT" and returns the port.
func (p *peer) ready() int {
	p.t.Helper()
	port, err := strconv.Atoi(strings.TrimPrefix(p.expect("ready "), "ready "))
	if err != nil {
		p.t.Fatal(err)
	}
	return port
}

// close closes its stdin and waits for it to exit.
func (p *peer) close() {
	p.t.Helper()
	_ = p.stdin.Close()
	for range p.lines {
	}
	if err := p.cmd.Wait(); err != nil {
		p.t.Fatalf("dnspeer: %v", err)
	}
}
