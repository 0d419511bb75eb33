package namecheck

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/egresskit/egress/store"
)

// recorder gathers refusals between two writes to the store, at most
// store.MaxRefusals of them (the others are counted as lost).
type recorder struct {
	mu   sync.Mutex
	m    map[recKey]*store.Refusal
	lost uint64
}

type recKey struct {
	store.FlowKey
	name string
}

func newRecorder() *recorder { return &recorder{m: map[recKey]*store.Refusal{}} }

func (r *recorder) add(e Event, at time.Time) {
	k := store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port}
	id := recKey{k, e.Name}
	r.mu.Lock()
	defer r.mu.Unlock()
	ref, ok := r.m[id]
	if !ok {
		if len(r.m) >= store.MaxRefusals {
			r.lost++
			return
		}
		ref = &store.Refusal{FlowKey: k, Name: e.Name, FirstSeen: at, LastSeen: at}
		r.m[id] = ref
	}
	ref.Kind, ref.Verdict, ref.LastSeen = e.Kind, e.Verdict, at
	if e.Enforced {
		ref.Dropped++
	} else {
		ref.Audited++
	}
}

func (r *recorder) take() ([]store.Refusal, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]store.Refusal, 0, len(r.m))
	for _, ref := range r.m {
		out = append(out, *ref)
	}
	lost := r.lost
	r.m, r.lost = map[recKey]*store.Refusal{}, 0
	return out, lost
}

func (r *recorder) giveBack(rs []store.Refusal, lost uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost += lost
	for i := range rs {
		id := recKey{rs[i].FlowKey, rs[i].Name}
		if cur, ok := r.m[id]; ok {
			cur.Dropped += rs[i].Dropped
			cur.Audited += rs[i].Audited
			store.WidenSeen(&cur.FirstSeen, &cur.LastSeen, rs[i].FirstSeen, rs[i].LastSeen)
		} else if len(r.m) < store.MaxRefusals {
			r.m[id] = &rs[i]
		} else {
			r.lost += rs[i].Dropped + rs[i].Audited
		}
	}
}

func (r *recorder) flush(st *store.Store) error {
	rs, lost := r.take()
	if len(rs) == 0 && lost == 0 {
		return nil
	}
	if err := st.RecordRefusals(rs, lost); err != nil {
		r.giveBack(rs, lost)
		return err
	}
	return nil
}

// loop writes the refusals every interval until stop, then once more.
func (r *recorder) loop(st *store.Store, every time.Duration, log *slog.Logger, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			if err := r.flush(st); err != nil {
				log.Error("name check: the last refusals could not be recorded", "err", err)
			}
			return
		}
		if err := r.flush(st); errors.Is(err, store.ErrBusy) {
			log.Warn("store busy, keeping the refusals for the next flush", "err", err)
		} else if err != nil {
			log.Error("name check: record the refusals (kept for the next flush)", "err", err)
		}
	}
}
