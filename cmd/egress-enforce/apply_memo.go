package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/cli"
	"github.com/egresskit/egress/internal/phase"
	"github.com/egresskit/egress/store"
)

// applyMemo is the memo an apply --from one export writes for the next
// (baseline.ReadExportMemo): made while the table is applied, written
// once it is, as the memo of its generation.
type applyMemo struct {
	done  chan struct{}
	pm    *baseline.PendingMemo
	err   error
	once  sync.Once
	start func() // makes the memo in a goroutine of its own
}

// buildApplyPlan is buildPlan for apply: an apply --from one export reads
// it against the memo of the export applied before, when the store says
// the table is the generation the memo was made for, and starts the memo
// of this one (nil for other applies, and a dry run).
func buildApplyPlan(cmd *cobra.Command, e *env, dryRun bool) (*built, *applyMemo, error) {
	from, _ := cmd.Flags().GetStringArray("from")
	if len(from) != 1 || dryRun {
		wholeReadGC(from)
		b, err := buildPlan(cmd, e)
		return b, nil, err
	}
	// The memo's reader reads the file on its own: its size is checked
	// here (a file that grows meanwhile is not).
	if err := baseline.CheckExportSize(from[0]); err != nil {
		return nil, nil, err
	}
	opts, err := planOptions(cmd, e)
	if err != nil {
		return nil, nil, err
	}
	e.Log.Info("dns servers", "resolv_conf", opts.ResolvConf, "servers", fmt.Sprint(opts.DNSServers))
	table := cmp.Or(opts.Table, plan.DefaultTable)
	path := rollout.MemoPath(e.Cfg.DB, e.target, table)
	if st, err := os.Stat(path); err != nil {
		wholeReadGC(from)
	} else {
		cli.FirstGCAt(memoReadGCAt(st.Size()))
	}
	// The store is opened, and the generation the table is read, while
	// the export and the memo are read.
	var gen uint64
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		if st, err := e.applyStore(); err == nil {
			gen, _ = rollout.CurrentGeneration(st, e.target, table)
		}
		phase.Mark("store opened, generation read")
	}()
	r, err := baseline.ReadExportMemoOf(from[0], path, func() uint64 { <-opened; return gen }, &opts, func(w string) { slog.Warn(w) })
	<-opened
	phase.Mark("export and memo read")
	if err != nil {
		return nil, nil, err
	}
	if r.Reason == "" {
		// What is left to allocate is about what the export changed, and
		// what the store and the kernel need: collecting it costs more
		// than the memory it would give back before the exit.
		cli.FewerGCs(1000)
	}
	if r.Reason != "" {
		e.Log.Info("the export was read whole: "+r.Reason, "export", from[0])
	} else {
		e.Log.Info("the export was read against the one applied before: only its changed flows were read", "export", from[0], "flows_kept", r.Reused)
	}
	p := plan.BuildWith(r.Merged.Flows, r.Plain, opts)
	phase.Mark("plan built")
	m := &applyMemo{done: make(chan struct{})}
	m.start = func() {
		go func() {
			defer close(m.done)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				m.err = err
				return
			}
			m.pm, m.err = baseline.StartMemo(path, r.Memo(p))
			phase.Mark("next memo made (beside)")
		}()
	}
	if r.Reason != "" {
		// A whole read: the memo is made beside the whole plan's
		// renderings. Read against the memo, the apply is likely a delta,
		// whose index and delta come first: the memo is made once the
		// approvals are (apply's approve).
		m.begin()
	}
	return &built{plan: p, opts: opts}, m, nil
}

// wholeReadGC keeps the garbage collector off until the heap reaches
// firstGCAt of the exports' size, in an apply that reads its flows whole
// (no memo to read them against). Not with a memo: a delta then keeps 13
// MiB of garbage for no CPU it saves (its faults on fresh pages cost what
// the collections did).
func wholeReadGC(exports []string) {
	var size int64
	for _, p := range exports {
		if st, err := os.Stat(p); err == nil {
			size += st.Size()
		}
	}
	cli.FirstGCAt(firstGCAt(size))
}

// memoReadGCAt is the heap at which a read against a memo of size bytes
// collects first: 4 times its size, at least 32 MiB, at most 2 GiB, past
// the memo's decoding (its arrays, ~0.7 times its size, are written on
// both cores at once). A collection while they were written (at 15 MB,
// GOGC=300's first) marked them before they were written: a delta's
// memo read took 40-100 ms instead of 25-45 (TestReadMemoFresh, CPU 86
// ms against 44 without a collection).
func memoReadGCAt(size int64) int {
	return int(min(max(4*size, 32<<20), 2<<30))
}

// firstGCAt is the heap at which a whole read of exports of size bytes
// collects first: 7 times their size, at least 160 MiB, at most 2 GiB.
// At 100k flows (a 23 MB export) it is 160 MiB: one collection instead
// of two (at 51 and 218 MB), 17-25% less CPU, no more memory at its peak.
// At 1M flows (236 MB) a fixed 160 MiB collected at once, 20 ms in, when
// the slices the flows are read into were reserved (~500 MB, nothing to
// free) and not yet written: its marking read every page of them (~120k
// faults on the zero page, then as many again when they were written),
// and a second collection followed at 2 GB. At 7 times the export's size
// there is one, at ~1.65 GB: 674k -> 530k faults, ~15% less CPU, the same
// peak RSS (2.0 GB).
func firstGCAt(size int64) int {
	return int(min(max(7*size, 160<<20), 2<<30))
}

// begin starts making the memo, once (nil m: nothing to make).
func (m *applyMemo) begin() {
	if m != nil {
		m.once.Do(m.start)
	}
}

// write makes the memo generation n's (nil m: nothing to write).
func (m *applyMemo) write(n uint64) {
	if m == nil {
		return
	}
	m.begin()
	<-m.done
	err := m.err
	if err == nil {
		err = m.pm.Commit(n)
	}
	phase.Mark("memo committed")
	if err != nil {
		slog.Warn("the memo of the export applied could not be written: the next apply reads its export whole", "err", err)
	}
}

// abort drops the memo of an apply that failed: the one in place stays.
func (m *applyMemo) abort() {
	if m == nil {
		return
	}
	m.once.Do(func() { close(m.done) }) // never begun: nothing to drop
	<-m.done
	if m.pm != nil {
		m.pm.Abort()
	}
}

// applyStore opens the store for writing once: the memo's generation is
// read, and the apply recorded, through one Store (its first transaction
// checks the file, the next ones need not).
func (e *env) applyStore() (*store.Store, error) {
	if e.st == nil {
		st, err := e.WriteStore()
		if err != nil {
			return nil, err
		}
		e.st = st
	}
	return e.st, nil
}
