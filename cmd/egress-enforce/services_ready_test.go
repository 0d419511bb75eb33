package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// onMessage is a log handler that calls fn when a record with msg is
// logged, before the logging call returns.
type onMessage struct {
	msg string
	fn  func()
}

func (h *onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h *onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.fn()
	}
	return nil
}
func (h *onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *onMessage) WithGroup(string) slog.Handler      { return h }

// configuredDB is the store path of a serviceHost's configuration file.
func configuredDB(t *testing.T, env []string) string {
	t.Helper()
	for _, kv := range env {
		if path, ok := strings.CutPrefix(kv, "EGRESS_CONFIG="); ok {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				if db, ok := strings.CutPrefix(line, "db: "); ok {
					return db
				}
			}
		}
	}
	t.Fatal("no db in the configuration")
	return ""
}

// TestServicesReadyMeansKept: once "egress-enforce services" says it
// keeps the services ("services: keeping"), a restart is seen and
// printed, even one made at that very moment (here, inside the logging
// call). The line used to come before the keeper read the cgroups' ids:
// a restart in between was only the id it installed, never printed, and
// TestServicesEndToEnd, which restarts a service as soon as it reads the
// line, waited in vain for it on a busy machine.
func TestServicesReadyMeansKept(t *testing.T) {
	lab.Require(t, "nsenter")
	h := newServiceHost(t, "")
	a := h.parent.Child(t, "a.service")
	learner, lerr := startLearner(t, h.env, "--cgroup", h.parent.Path, "--flush-interval", "200ms")
	h.as(a).MustRun(t, "curl", "-sS", url8080)
	stopLearner(t, learner, lerr)
	mustRun(t, enforceBin, h.env, "apply", "--mode", "enforce", "--match", "service")

	st, err := store.Open(configuredDB(t, h.env), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cg, err := nft.HostCgroups()
	if err != nil {
		t.Fatal(err)
	}
	ready, restarted := make(chan struct{}), make(chan struct{})
	var first sync.Once
	log := slog.New(&onMessage{msg: "services: keeping", fn: func() {
		first.Do(func() { close(ready); <-restarted }) // the first keeper waits for the restart
	}})
	changes := make(chan nft.ServiceChange, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- keepServices(ctx, st, nft.Open(nft.Target{Netns: h.pair.Client.Name}), cg, plan.DefaultTable, log,
			func(c nft.ServiceChange) { changes <- c })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("services ended: %v", err)
	case <-time.After(lab.Patience):
		t.Fatal("services never said it keeps the services")
	}
	a.Recreate(t)
	close(restarted)
	deadline := time.After(lab.Patience)
	for {
		select {
		case c := <-changes:
			if c.Service == a.Rel(t) && c.To != 0 {
				return
			}
			t.Logf("change %+v", c)
		case <-deadline:
			t.Fatalf("waited %v for the restart of %s, made when services said it keeps it", lab.Patience, a.Rel(t))
		}
	}
}
