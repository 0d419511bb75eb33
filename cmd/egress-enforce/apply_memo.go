package main

import (
	"cmp"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/rollout"
)

// applyMemo is the memo an apply --from one export writes for the next
// (baseline.ReadExportMemo): made while the table is applied, written
// once it is, as the memo of its generation.
type applyMemo struct {
	path string
	body chan []byte
}

// buildApplyPlan is buildPlan for apply: an apply --from one export reads
// it against the memo of the export applied before, when the store says
// the table is the generation the memo was made for, and starts the memo
// of this one (nil for other applies).
func buildApplyPlan(cmd *cobra.Command, e *env) (*built, *applyMemo, error) {
	from, _ := cmd.Flags().GetStringArray("from")
	if len(from) != 1 {
		b, err := buildPlan(cmd, e)
		return b, nil, err
	}
	opts, err := planOptions(cmd, e)
	if err != nil {
		return nil, nil, err
	}
	e.Log.Info("dns servers", "resolv_conf", opts.ResolvConf, "servers", fmt.Sprint(opts.DNSServers))
	table := cmp.Or(opts.Table, plan.DefaultTable)
	path := rollout.MemoPath(e.Cfg.DB, e.target, table)
	var gen uint64
	if st, err := e.ReadStore(); err == nil {
		gen, _ = rollout.CurrentGeneration(st, e.target, table)
	}
	r, err := baseline.ReadExportMemo(from[0], path, gen, &opts, func(w string) { slog.Warn(w) })
	if err != nil {
		return nil, nil, err
	}
	if r.Reason != "" {
		e.Log.Info("the export was read whole: "+r.Reason, "export", from[0])
	} else {
		e.Log.Info("the export was read against the one applied before: only its changed flows were read", "export", from[0], "flows_kept", r.Reused)
	}
	p := plan.BuildWith(r.Merged.Flows, r.Plain, opts)
	m := &applyMemo{path: path, body: make(chan []byte, 1)}
	go func() { m.body <- r.Memo(p) }()
	return &built{plan: p, opts: opts}, m, nil
}

// write writes the memo as generation n's (nil m: nothing to write).
func (m *applyMemo) write(n uint64) {
	if m == nil {
		return
	}
	if err := baseline.WriteMemo(m.path, n, <-m.body); err != nil {
		slog.Warn("the memo of the export applied could not be written: the next apply reads its export whole", "err", err)
	}
}
