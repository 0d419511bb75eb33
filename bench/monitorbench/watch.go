//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/egresskit/egress/bench/internal/benchutil"
	"github.com/egresskit/egress/store"
)

// watcher is a running "egress-enforce watch".
type watcher struct {
	cmd    *exec.Cmd
	url    string
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWatch runs the watch binary on the namespace with its own store and
// metrics on a free port of the host's loopback, as its systemd unit
// does (--quiet), and waits for its "watching" line.
func startWatch(bin, ns, db string) (*watcher, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	w := &watcher{url: "http://" + addr + "/metrics", stderr: &syncBuffer{}}
	w.cmd = exec.Command(bin, "watch", "--quiet", "--netns", target(ns).Netns, "--metrics-addr", addr, "--db", db)
	w.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "EGRESS_NFLOG_GROUP=" + strconv.Itoa(group)}
	w.cmd.Stderr = w.stderr
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(w.stderr.String(), "msg=watching") {
		if time.Now().After(deadline) {
			w.kill()
			return nil, fmt.Errorf("watch did not start:\n%s", w.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return w, nil
}

func (w *watcher) kill() {
	if w.cmd.ProcessState == nil {
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
	}
}

// stop ends the watch with SIGTERM (its last flush) and checks it exits 0.
func (w *watcher) stop() error {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if err := w.cmd.Wait(); err != nil {
		return fmt.Errorf("watch after SIGTERM: %v\n%s", err, w.stderr.String())
	}
	return nil
}

// rss reads the watch's peak and current resident set, in MiB.
func (w *watcher) rss() (peak, now float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb / 1024
		case "VmRSS:":
			now = kb / 1024
		}
	}
	return peak, now
}

// settle waits until the monitor has received what it will (its entries
// stop growing for 3 s), then past one flush, and reads the metrics.
func (w *watcher) settle(f *floodResult) error {
	var last float64
	stable := time.Now()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Since(stable) < 3*time.Second {
		if time.Now().After(deadline) {
			return fmt.Errorf("the monitor did not settle")
		}
		m, err := scrape(w.url)
		if err != nil {
			return err
		}
		if v := m["egress_monitor_log_entries_total"]; v != last {
			last, stable = v, time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(6 * time.Second) // one flush interval, and a refresh of the reading
	m, err := scrape(w.url)
	if err != nil {
		return err
	}
	f.KernelDropped, f.LogEntries = m["egress_kernel_dropped_packets_total"], m["egress_monitor_log_entries_total"]
	f.Unlogged, f.Unrecorded = m["egress_unlogged_packets_total"], m["egress_monitor_unrecorded_packets_total"]
	f.ReceiveErrors, f.TopEntries = m["egress_monitor_receive_errors_total"], m["egress_monitor_tracked_entries"]
	f.LostLogs = m["egress_monitor_lost_log_entries_total"]
	benchutil.Logf("  kernel dropped %.0f, unlogged %.0f, received %.0f, lost on the socket %.0f (%.0f errors), unrecorded %.0f",
		f.KernelDropped, f.Unlogged, f.LogEntries, f.LostLogs, f.ReceiveErrors, f.Unrecorded)
	return nil
}

// scrape sums each metric family's samples.
func scrape(url string) (map[string]float64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			switch {
			case m.Counter != nil:
				out[name] += m.Counter.GetValue()
			case m.Gauge != nil:
				out[name] += m.Gauge.GetValue()
			}
		}
	}
	return out, nil
}

// readStore counts the observations the watch left in its store.
func readStore(db string, f *floodResult) error {
	st, err := store.Open(db, store.Options{})
	if err != nil {
		return err
	}
	obs, err := st.Observations()
	if err != nil {
		return err
	}
	f.Observations = len(obs)
	if fi, err := os.Stat(db); err == nil {
		f.StoreMiB = float64(fi.Size()) / (1 << 20)
	}
	return nil
}
