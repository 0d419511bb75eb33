package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// withStaging sets the staging bounds for one test.
func withStaging(t *testing.T, minKeys, chunk int) {
	t.Helper()
	m, c := stageMin, stageChunk
	stageMin, stageChunk = minKeys, chunk
	t.Cleanup(func() { stageMin, stageChunk = m, c })
}

// rawFlows are the flows bucket's keys and values, and the store's
// transaction id; it fails the test when the file does not pass bbolt's
// check or holds a staging bucket.
func rawFlows(t *testing.T, s *Store) (map[string]string, int) {
	t.Helper()
	out := map[string]string{}
	var txid int
	err := s.view(func(tx *bolt.Tx) error {
		txid = tx.ID()
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		if tx.Bucket(bucketStaging) != nil {
			t.Error("a staging bucket is left in the file")
		}
		return tx.Bucket(bucketFlows).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, txid
}

// mixedStore is a store with 30 learned flows, 10 of them approved by
// generation 1, and a generation 2 applying; keys are the 400 flows an
// apply approves: 20 of the learned ones (10 approved), 380 new ones, some
// twice.
func mixedStore(t *testing.T) (s *Store, keys []FlowKey) {
	t.Helper()
	s = newStore(t)
	key := func(i int) FlowKey {
		return FlowKey{UID: 1000 + uint32(i%3), Proto: 6, IP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 443}
	}
	var learned []Flow
	for i := 0; i < 30; i++ {
		learned = append(learned, Flow{FlowKey: key(i * 13), Hits: uint64(i + 1), FirstSeen: t0, LastSeen: t0.Add(time.Minute), Hostnames: []string{"a.example"}})
	}
	if err := s.Apply(&Batch{Flows: learned}); err != nil {
		t.Fatal(err)
	}
	var first []FlowKey
	for i := 0; i < 10; i++ {
		first = append(first, learned[i].FlowKey)
	}
	if err := s.SetApproval(first, func(f *Flow) { f.Approved, f.ApprovedAt = 1, t0 }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		keys = append(keys, learned[i].FlowKey)
	}
	for i := 0; i < 380; i++ {
		keys = append(keys, key(1000+i*7))
		if i%50 == 0 {
			keys = append(keys, key(1000+i*7))
		}
	}
	// Generation 1 is the earlier apply's, generation 2 this one's.
	for range 2 {
		if _, err := s.AddGeneration(Generation{State: GenApplying}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return s, keys
}

func approveGen2(f *Flow) {
	if f.Approved == 0 {
		f.Approved, f.ApprovedAt, f.ApprovedNames = 2, t0.Add(time.Hour), f.Hostnames
	}
}

// TestStagedApprovalsSameAsOneTransaction: approvals written through a
// staging bucket, several transactions, leave the same flows, byte for
// byte, as the one transaction they replace (learned flows kept, approved
// ones left as they were, new ones added once), the generation recorded,
// the file sound and no staging bucket left.
func TestStagedApprovalsSameAsOneTransaction(t *testing.T) {
	withStaging(t, 1<<62, stageChunk)
	one, keys := mixedStore(t)
	_, before := rawFlows(t, one)
	if _, err := one.UpdateGenerationPlanApproving(2, []byte("plan"), markApplied, NewApprovals(keys, approveGen2)); err != nil {
		t.Fatal(err)
	}
	want, after := rawFlows(t, one)
	if after != before+1 {
		t.Fatalf("one transaction: %d transactions", after-before)
	}

	withStaging(t, 100, 37)
	staged, keys := mixedStore(t)
	_, before = rawFlows(t, staged)
	packed, err := PackPlan([]byte("plan"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := staged.UpdateGenerationPlanApproving(2, packed, markApplied, NewApprovals(keys, approveGen2))
	if err != nil {
		t.Fatal(err)
	}
	got, after := rawFlows(t, staged)
	if after-before < 3 {
		t.Errorf("staged: %d transactions, want several (the approvals were not staged)", after-before)
	}
	if g.State != GenApplied {
		t.Errorf("generation %s, want applied", g.State)
	}
	if len(got) != len(want) || len(got) != 30+380 {
		t.Fatalf("%d flows staged, %d in one transaction, want %d", len(got), len(want), 30+380)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("flow %x: staged %s, one transaction %s", k, got[k], v)
		}
	}
	plan, err := staged.GenerationPlan(2)
	if err != nil || string(plan) != "plan" {
		t.Errorf("plan of generation 2: %q, %v", plan, err)
	}
}

// TestStagedApprovalsAllOrNothing: when the transaction that records the
// generation fails, no approval is visible and the staged flows are gone;
// readers meanwhile see the flows before or after, never a part.
func TestStagedApprovalsAllOrNothing(t *testing.T) {
	withStaging(t, 100, 37)
	s, keys := mixedStore(t)
	want, _ := rawFlows(t, s)
	refuse := errors.New("generation 2 became rolled-back")
	_, err := s.UpdateGenerationPlanApproving(2, []byte("plan"), func(*Generation) error { return refuse }, NewApprovals(keys, approveGen2))
	if !errors.Is(err, refuse) {
		t.Fatalf("error %v, want %v", err, refuse)
	}
	got, _ := rawFlows(t, s)
	if len(got) != len(want) {
		t.Fatalf("%d flows after a failed write, want the %d before", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("flow %x changed by a failed write: %s, was %s", k, got[k], v)
		}
	}

	// A reader of another Store of the file, all along the write.
	r, err := Open(s.Path(), Options{LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seen []int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			flows, err := r.Flows()
			if err != nil {
				t.Error(err)
				return
			}
			approved := 0
			for _, f := range flows {
				if f.Approved == 2 {
					approved++
				}
			}
			if len(flows) != 30 && len(flows) != 410 || len(flows) == 410 && approved != 400-10 {
				t.Errorf("a reader saw %d flows, %d approved by generation 2: a part of the write", len(flows), approved)
			}
			seen = append(seen, len(flows))
			time.Sleep(2 * time.Millisecond) // leaves the lock free for the writer's polls
		}
	}()
	if _, err := s.UpdateGenerationPlanApproving(2, []byte("plan"), markApplied, NewApprovals(keys, approveGen2)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if got, _ := rawFlows(t, s); len(got) != 410 {
		t.Errorf("%d flows, want 410", len(got))
	}
	t.Logf("the reader saw %v flows", seen)
}

// TestStagingLeftBehindIsDropped: a staging bucket a crash left between
// two staging transactions is not read, and the next write of approvals
// deletes it.
func TestStagingLeftBehindIsDropped(t *testing.T) {
	s, keys := mixedStore(t)
	err := s.update(func(tx *bolt.Tx) error {
		sb, err := stagingFlows(tx, true)
		if err != nil {
			return err
		}
		return sb.Put(FlowKey{UID: 7, Proto: 17, IP: netip.MustParseAddr("192.0.2.9"), Port: 53}.bytes(), []byte(`{"hits":1}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	flows, err := s.Flows()
	if err != nil || len(flows) != 30 {
		t.Fatalf("%d flows with a staging bucket left (%v), want 30", len(flows), err)
	}
	if err := s.WriteApprovals(NewApprovals(keys[:3], approveGen2)); err != nil {
		t.Fatal(err)
	}
	rawFlows(t, s) // fails on a staging bucket
}

// TestStagedApprovalsReadBack: a new store approves 250,000 flows with
// the default bounds (staged, in chunks); every flow reads back approved,
// once.
func TestStagedApprovalsReadBack(t *testing.T) {
	const n = 250_000
	if n < stageMin {
		t.Fatalf("%d flows would not be staged (stageMin %d)", n, stageMin)
	}
	s, err := Create(filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := benchKeys(n)
	g, err := s.AddGeneration(Generation{State: GenApplying}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, before := rawFlows(t, s)
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.UpdateGenerationPlanApproving(g.N, nil, markApplied, NewApprovals(keys, func(f *Flow) { f.Approved, f.ApprovedAt = g.N, at })); err != nil {
		t.Fatal(err)
	}
	raw, after := rawFlows(t, s)
	if after-before < 3 {
		t.Errorf("%d transactions: not staged", after-before)
	}
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != n || len(raw) != n {
		t.Fatalf("%d flows read (%d keys), want %d", len(flows), len(raw), n)
	}
	for i, f := range flows {
		if f.FlowKey != keys[i] {
			t.Fatalf("flow %d is %v, want %v", i, f.FlowKey, keys[i])
		}
		if f.Approved != g.N || !f.ApprovedAt.Equal(at) {
			t.Fatalf("flow %v: approved by %d at %v, want %d at %v", f.FlowKey, f.Approved, f.ApprovedAt, g.N, at)
		}
	}
	// Approving them again stages nothing and writes nothing.
	if err := s.ApproveNew(keys, func(*Flow) { t.Fatal("an approved flow was seen") }); err != nil {
		t.Fatal(err)
	}
	again, last := rawFlows(t, s)
	if last != after+1 || len(again) != n {
		t.Errorf("approving approved flows: %d transactions, %d flows", last-after, len(again))
	}
	if !bytes.Equal([]byte(again[string(keys[0].bytes())]), []byte(raw[string(keys[0].bytes())])) {
		t.Error("an approved flow was rewritten")
	}
}

// TestApprovedRecordAsLastIndex: approvedRecord tells what looking up the
// last "approved": key tells, on records written by the store and others.
func TestApprovedRecordAsLastIndex(t *testing.T) {
	byLastIndex := func(v []byte) bool {
		i := bytes.LastIndex(v, []byte(`"approved":`))
		if i < 0 {
			return false
		}
		rest := v[i+len(`"approved":`):]
		return len(rest) > 0 && rest[0] >= '1' && rest[0] <= '9'
	}
	recs := [][]byte{nil, []byte(""), []byte(":"), []byte(`"approved":`), []byte(`approved":1`), []byte(`{"approved":0}`), []byte(`{"approved":12}`),
		[]byte(`{"a":"x:y","approved":3,"approved_at":"2026-12-01T00:00:00Z","approved_names":["a:b"],"retired":"2026-12-01T00:00:00Z"}`),
		[]byte(`{"approved":3,"x":{"approved":0}}`), []byte(`{"x":{"approved":0},"approved":3}`)}
	for _, f := range []Flow{{}, {Approval: Approval{Approved: 9, ApprovedAt: t0, ApprovedNames: []string{"approved:1", `"approved":2`}}}, {Approval: Approval{Retired: t0}}} {
		data, err := appendFlowRecord(nil, &flowRecord{Flow: f})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, data)
	}
	recs = append(recs, flowJSONSeeds()...)
	for _, v := range recs {
		if got, want := approvedRecord(v), byLastIndex(v); got != want {
			t.Errorf("approvedRecord(%s) = %v, want %v", v, got, want)
		}
	}
}

// TestApprovedAtTextSameBytes: records written through one approval time
// cache, one after the other, are what json.Marshal writes, whatever
// time came before (the same, another, another zone, one it refuses).
func TestApprovedAtTextSameBytes(t *testing.T) {
	east := time.FixedZone("x", 5*3600+30*60)
	times := []time.Time{t0, t0, t0.In(east), t0, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), t0, time.Now(), time.Now().Round(0), {}, t0.Add(time.Nanosecond)}
	var c approvedAtText
	for i, at := range times {
		rec := &flowRecord{Flow: Flow{Hits: uint64(i), Approval: Approval{Approved: 3, ApprovedAt: at}}}
		want, werr := json.Marshal(rec)
		got, gerr := appendFlowRecordAt(nil, rec, &c)
		if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got, want) {
			t.Errorf("record %d (approved at %v):\n got  %s (%v)\n want %s (%v)", i, at, got, gerr, want, werr)
		}
	}
}
