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

// rawFlows are the flows bucket's keys and values, and the store's
// transaction id; it fails the test when the file does not pass bbolt's
// check.
func rawFlows(t *testing.T, s *Store) (map[string]string, int) {
	t.Helper()
	out := map[string]string{}
	var txid int
	err := s.view(func(tx *bolt.Tx) error {
		txid = tx.ID()
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
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

// TestApprovalsPastTheLastKey: keys past the last stored one are added
// without a look-up, the others looked up: learned flows keep what was
// learned, approved ones stay as they were (the last stored key
// included), new ones are added once.
func TestApprovalsPastTheLastKey(t *testing.T) {
	s, keys := mixedStore(t)
	before, _ := rawFlows(t, s)
	var last string
	for k := range before {
		last = max(last, k)
	}
	lastKey, err := parseFlowKey([]byte(last))
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, lastKey)
	if _, err := s.UpdateGenerationPlanApproving(2, nil, markApplied, NewApprovals(keys, approveGen2)); err != nil {
		t.Fatal(err)
	}
	learned := map[FlowKey]bool{}
	for k := range before {
		fk, _ := parseFlowKey([]byte(k))
		learned[fk] = true
	}
	want := map[FlowKey]bool{}
	for _, k := range keys {
		want[k] = true
	}
	after, _ := rawFlows(t, s)
	if len(after) != 30+380 {
		t.Fatalf("%d flows, want %d", len(after), 30+380)
	}
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	pastLast := 0
	for _, f := range flows {
		k := string(f.FlowKey.bytes())
		switch {
		case !want[f.FlowKey]:
			if after[k] != before[k] {
				t.Errorf("flow %v left by the approvals changed: %s, was %s", f.FlowKey, after[k], before[k])
			}
		case learned[f.FlowKey] && (before[k] != after[k]) == approvedRecord([]byte(before[k])):
			t.Errorf("learned flow %v: %s, was %s", f.FlowKey, after[k], before[k])
		case learned[f.FlowKey] && !approvedRecord([]byte(before[k])) && (f.Approved != 2 || f.Hits == 0):
			t.Errorf("learned flow %v: approved by %d with %d hits, want 2 and its hits", f.FlowKey, f.Approved, f.Hits)
		case !learned[f.FlowKey] && (f.Approved != 2 || f.Hits != 0):
			t.Errorf("new flow %v: approved by %d with %d hits, want 2 and none", f.FlowKey, f.Approved, f.Hits)
		}
		if k > last {
			pastLast++
		}
	}
	if pastLast == 0 || pastLast == 380 {
		t.Errorf("%d new flows past the last stored key: the test wants some on either side", pastLast)
	}
}

// TestApprovalsAllOrNothing: when the generation cannot be recorded, no
// approval is visible; readers meanwhile see the flows before or after,
// never a part.
func TestApprovalsAllOrNothing(t *testing.T) {
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

// TestApprovalsReadBack: a new store approves 250,000 flows (none looked
// up); every flow reads back approved, once; approving them again writes
// nothing.
func TestApprovalsReadBack(t *testing.T) {
	const n = 250_000
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
	if after != before+1 {
		t.Errorf("%d transactions, want one", after-before)
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
	// Approving them again writes nothing.
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
