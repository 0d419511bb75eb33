package store

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/egresskit/egress/internal/phase"
)

// ApprovingWrite is the write that records a generation applied with its
// approvals, begun before the generation is known to be applied: the
// approvals go into the write transaction while the caller applies the
// table (a million approvals: ~0.5-1.5 s of Puts beside the kernel's work
// instead of after it). Then Commit records the generation in the same
// transaction and commits: the generation with its approvals, or nothing
// of either; or Abort rolls the transaction back: nothing of it is
// written, the store stays as it was.
//
// One goroutine of its own owns the transaction. Until Commit or Abort,
// the store is locked: this Store's other calls wait (so call neither from
// the code they wait on), and so do other processes (the file lock).
type ApprovingWrite struct {
	decide  chan approvingDecision // buffered: the owner may be gone
	written chan struct{}          // closed once the approvals are in (or failed)
	done    chan struct{}
	once    sync.Once
	g       Generation
	err     error
}

type approvingDecision struct {
	commit bool
	n      uint64
	packed []byte
	fn     func(*Generation) error
}

// errAborted rolls an aborted ApprovingWrite back.
var errAborted = errors.New("approvals aborted")

// BeginApprovingWrite opens a write transaction and writes into it the
// approvals that approvals gives (it may wait for them; nil: none), in a
// goroutine of its own. Commit or Abort must follow.
func (s *Store) BeginApprovingWrite(approvals func() *Approvals) *ApprovingWrite {
	w := &ApprovingWrite{decide: make(chan approvingDecision, 1), written: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var wrote sync.Once
		defer wrote.Do(func() { close(w.written) })
		w.err = s.update(func(tx *bolt.Tx) error {
			var err error
			ofPlan := false
			if a := approvals(); a != nil {
				err = a.write(tx)
				ofPlan = a.ofPlan
				phase.Mark("store: approvals put")
			}
			wrote.Do(func() { close(w.written) })
			if err != nil {
				return fmt.Errorf("record approvals: %w", err) // the lock goes now
			}
			d := <-w.decide
			if !d.commit {
				return errAborted
			}
			err = recordGenerationPlan(tx, d.n, d.packed, func(g *Generation) error {
				if err := d.fn(g); err != nil {
					return err
				}
				if ofPlan { // every flow of its plan is approved now
					g.ApprovalsEpoch = approvalsEpoch(tx)
				}
				return nil
			}, &w.g)
			phase.Mark("store: generation put")
			return err
		})
	}()
	return w
}

// Written closes once the approvals are in the transaction (or could not
// be written, or the transaction not begun).
func (w *ApprovingWrite) Written() <-chan struct{} { return w.written }

// Commit changes generation n with fn and records its plan (packed; nil:
// leave it) in the transaction of the approvals, and commits it, as
// UpdateGenerationPlanApproving does. An error (the approvals' write, fn's,
// the commit's) leaves the store as it was.
func (w *ApprovingWrite) Commit(n uint64, packed []byte, fn func(*Generation) error) (Generation, error) {
	w.finish(approvingDecision{commit: true, n: n, packed: packed, fn: fn})
	return w.g, w.err
}

// Abort rolls the transaction back: nothing is written. After Commit or
// Abort, it does nothing.
func (w *ApprovingWrite) Abort() {
	w.finish(approvingDecision{})
}

func (w *ApprovingWrite) finish(d approvingDecision) {
	w.once.Do(func() {
		w.decide <- d
		<-w.done
	})
}
