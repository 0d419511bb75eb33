package baseline

import (
	"testing"

	"github.com/egresskit/egress/store"
)

// TestSizedAndTouched: a prefaulted slice with room is used as is (its
// zeros kept), one without room is replaced by a new one of the length
// asked.
func TestSizedAndTouched(t *testing.T) {
	pre := make([]memoFlow, 100)
	touch(pre)
	if got := sized(pre, 60); len(got) != 60 || &got[0] != &pre[0] {
		t.Errorf("sized with room: len %d, same array %v", len(got), &got[0] == &pre[0])
	}
	if got := sized(pre, 101); len(got) != 101 || &got[0] == &pre[0] {
		t.Errorf("sized without room: len %d, same array %v", len(got), &got[0] == &pre[0])
	}
	for i, f := range pre {
		if f.old != 0 || f.rd != 0 || f.plain {
			t.Fatalf("flow %d not zero after touch: %+v", i, f)
		}
	}
	sums := sized([]store.FlowSum(nil), 3)
	if len(sums) != 3 {
		t.Errorf("sized of nil: len %d", len(sums))
	}
}
