//go:build linux

package namecheck_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
)

// TestLearnModeLeavesAcceptedSockets: the learner learns the names its
// clients present, not what a server in the cgroup sends first. A server
// that speaks first, here with a request naming server.lab, tells
// nothing (else every peer of a server would turn into a flow with a
// presented name), while a client's name is still told.
func TestLearnModeLeavesAcceptedSockets(t *testing.T) {
	lab.Require(t, "socat")
	l := newLabWith(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), lab.Patience)
	defer cancel()
	srv := l.as().Command(ctx, "socat", "-d", "-d", "-u", "STDIN", "TCP-LISTEN:8081,bind="+lab.ClientIP4+",reuseaddr")
	srv.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: server.lab\r\n\r\n")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-listening:
	case <-ctx.Done():
		t.Fatal("socat did not listen")
	}

	// A client outside the cgroup takes what the server sends.
	var got []byte
	err = lab.InNetns(l.pair.Client, func() error {
		c, err := net.DialTimeout("tcp", lab.ClientIP4+":8081", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(lab.Patience))
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil || !strings.Contains(string(got), "server.lab") {
		t.Fatalf("reading the server: %q, %v", got, err)
	}

	// The events come in order: once the client's name is told, the
	// server's would have been.
	l.answered("http name2.lab", "http", "name2.lab", "80")
	lab.Await(t, "the client's name", func() bool { return len(l.eventsFor("name2.lab")) == 1 })
	if ev := l.eventsFor("server.lab"); len(ev) != 0 {
		t.Errorf("the server's first data was learnt as a presented name: %+v", ev)
	}
}
