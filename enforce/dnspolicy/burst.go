package dnspolicy

import "time"

// BurstDetector calls out the signature of DNS tunnelling: at least
// Threshold distinct names under one parent domain, from one user, within
// Window. Its memory is bounded: at most maxBurstKeys (user, parent)
// pairs and Threshold names each are tracked.
type BurstDetector struct {
	window    time.Duration
	threshold int
	seen      map[burstKey]*burstState
}

type burstKey struct {
	uid    uint32
	parent string
}

type burstState struct {
	start  time.Time
	names  map[string]struct{}
	called bool
}

const maxBurstKeys = 10000

// NewBurstDetector makes a detector.
func NewBurstDetector(window time.Duration, threshold int) *BurstDetector {
	return &BurstDetector{window: window, threshold: max(threshold, 2), seen: map[burstKey]*burstState{}}
}

// Add notes a denied name; it returns the distinct names under its parent
// in the current window, and true the first time they reach the threshold
// in that window.
func (b *BurstDetector) Add(uid uint32, name string, at time.Time) (int, bool) {
	if name == "" {
		return 0, false
	}
	k := burstKey{uid, ParentOf(name)}
	s := b.seen[k]
	if s == nil || at.Sub(s.start) > b.window {
		if s == nil && len(b.seen) >= maxBurstKeys {
			b.expire(at)
			if len(b.seen) >= maxBurstKeys {
				return 0, false
			}
		}
		s = &burstState{start: at, names: map[string]struct{}{}}
		b.seen[k] = s
	}
	if len(s.names) < b.threshold {
		s.names[name] = struct{}{}
	}
	if len(s.names) >= b.threshold && !s.called {
		s.called = true
		return len(s.names), true
	}
	return len(s.names), false
}

func (b *BurstDetector) expire(now time.Time) {
	for k, s := range b.seen {
		if now.Sub(s.start) > b.window {
			delete(b.seen, k)
		}
	}
}
