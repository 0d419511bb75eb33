package store

import (
	"crypto/sha256"
	"testing"
)

// TestFlowSummer: a byte changed in place changes the sum, in both modes;
// the sum depends on the key; one summer gives one sum for one input.
func TestFlowSummer(t *testing.T) {
	a := []byte(`{"uid":1000,"ip":"11.0.0.1","proto":6,"port":443,"hits":12}`)
	b := []byte(`{"uid":1000,"ip":"11.0.0.1","proto":6,"port":443,"hits":13}`)
	k1, k2 := [32]byte{1}, [32]byte{2}
	fallback := &FlowSummer{h: sha256.New()}
	copy(fallback.block[:], k1[:])
	for name, s := range map[string]*FlowSummer{"gcm": NewFlowSummer(k1), "sha256": fallback} {
		if s.Sum(a) == s.Sum(b) {
			t.Errorf("%s: a flow changed in place has the sum it had", name)
		}
		if s.Sum(a) != s.Sum(append([]byte(nil), a...)) {
			t.Errorf("%s: one input, two sums", name)
		}
	}
	if NewFlowSummer(k1).gcm == nil {
		t.Error("no GCM: the sums are SHA-256's")
	}
	if NewFlowSummer(k1).Sum(a) == NewFlowSummer(k2).Sum(a) || NewFlowSummer(k1).Sum(a) == fallback.Sum(a) {
		t.Error("the sum does not depend on the key, or the mode")
	}
}
