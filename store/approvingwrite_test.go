package store

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"testing"
)

// generationState is generation n's state and note.
func generationState(t *testing.T, s *Store, n uint64) (string, string) {
	t.Helper()
	gens, err := s.Generations()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gens {
		if g.N == n {
			return g.State, g.Note
		}
	}
	t.Fatalf("no generation %d", n)
	return "", ""
}

// TestApprovingWriteAbortLeavesTheStore: approvals written into the
// transaction (every Put done) and then aborted leave the store's file as
// it was, byte for byte: no flow approved, the generation as it was.
func TestApprovingWriteAbortLeavesTheStore(t *testing.T) {
	s, keys := mixedStore(t)
	flows, txid := rawFlows(t, s)
	file, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	puts := 0
	w := s.BeginApprovingWrite(func() *Approvals {
		return NewApprovals(keys, func(f *Flow) { puts++; approveGen2(f) })
	})
	<-w.Written()
	if puts == 0 {
		t.Fatal("no approval was written into the transaction before the abort")
	}
	w.Abort()
	w.Abort() // twice: nothing more
	after, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, file) {
		t.Error("an aborted write of approvals changed the store's file")
	}
	got, gotTx := rawFlows(t, s)
	if gotTx != txid || !maps.Equal(got, flows) {
		t.Errorf("after the abort: %d flows at transaction %d, want the %d at %d before", len(got), gotTx, len(flows), txid)
	}
	if state, _ := generationState(t, s, 2); state != GenApplying {
		t.Errorf("generation 2 is %s after the abort, want it as it was (%s)", state, GenApplying)
	}
	// The store is not left locked: the next write goes.
	if _, err := s.UpdateGeneration(2, markApplied); err != nil {
		t.Fatal(err)
	}
}

// TestApprovingWriteCommitIsTheOneWrite: Commit writes what
// UpdateGenerationPlanApproving writes: the same flows, the generation
// changed, its plan recorded.
func TestApprovingWriteCommitIsTheOneWrite(t *testing.T) {
	packed, err := PackPlan([]byte(`{"plan":1}`))
	if err != nil {
		t.Fatal(err)
	}
	one, keys := mixedStore(t)
	if _, err := one.UpdateGenerationPlanApproving(2, packed, markApplied, NewApprovals(keys, approveGen2)); err != nil {
		t.Fatal(err)
	}
	s, _ := mixedStore(t)
	w := s.BeginApprovingWrite(func() *Approvals { return NewApprovals(keys, approveGen2) })
	g, err := w.Commit(2, packed, markApplied)
	if err != nil || g.N != 2 || g.State != GenApplied {
		t.Fatalf("commit: %+v %v", g, err)
	}
	w.Abort() // after Commit: nothing
	want, _ := rawFlows(t, one)
	got, _ := rawFlows(t, s)
	if !maps.Equal(got, want) {
		t.Errorf("%d flows after Commit, want the %d of UpdateGenerationPlanApproving", len(got), len(want))
	}
	if state, _ := generationState(t, s, 2); state != GenApplied {
		t.Errorf("generation 2 is %s, want %s", state, GenApplied)
	}
	if plan, err := s.GenerationPlan(2); err != nil || string(plan) != `{"plan":1}` {
		t.Errorf("plan of generation 2: %q %v", plan, err)
	}
}

// TestApprovingWriteRefusedCommitWritesNothing: when the generation
// cannot be recorded, the approvals written beside are not either.
func TestApprovingWriteRefusedCommitWritesNothing(t *testing.T) {
	s, keys := mixedStore(t)
	flows, txid := rawFlows(t, s)
	w := s.BeginApprovingWrite(func() *Approvals { return NewApprovals(keys, approveGen2) })
	refuse := errors.New("generation 2 became rolled-back")
	if _, err := w.Commit(2, []byte("plan"), func(*Generation) error { return refuse }); !errors.Is(err, refuse) {
		t.Fatalf("error %v, want %v", err, refuse)
	}
	got, gotTx := rawFlows(t, s)
	if gotTx != txid || !maps.Equal(got, flows) {
		t.Errorf("after a refused commit: %d flows at transaction %d, want the %d at %d before", len(got), gotTx, len(flows), txid)
	}
	if plan, _ := s.GenerationPlan(2); plan != nil {
		t.Errorf("a refused commit recorded plan %q", plan)
	}
}
