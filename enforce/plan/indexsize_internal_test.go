package plan

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestIndexEncodeSizedOnce: the encoded index fills the buffer sized for
// it exactly (a buffer 4 bytes short copied a 100k-flow index, 5 MB, once
// more at its last rule).
func TestIndexEncodeSizedOnce(t *testing.T) {
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	var flows []store.Flow
	for i := range 300 {
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: 1, Proto: ProtoTCP, IP: netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), Port: 443},
			Hits: 1, LastSeen: now, Hostnames: []string{fmt.Sprint("a", i, ".example")}})
	}
	for _, follow := range []*FollowOptions{nil, {Mode: FollowBoth}} {
		b := IndexOf(Build(flows, Options{Now: now, Follow: follow})).Encode()
		if len(b) != cap(b) {
			t.Errorf("follow %v: an index of %d bytes in a buffer of %d", follow != nil, len(b), cap(b))
		}
	}
}
