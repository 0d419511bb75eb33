//go:build linux

package follow

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
)

func followedKey(uid uint32, ip string, proto uint8, port uint16) bpf.FollowAuthKey {
	a := netip.MustParseAddr(ip).As4()
	k := bpf.FollowAuthKey{Uid: uid, Port: port, Family: 4, Proto: proto}
	copy(k.Addr[:], a[:])
	return k
}

func bootNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano())
}

// TestFollowedForNameCheck: an answer a TCP rule matched puts (uid,
// address, TCP, port) in the name check's view, until the set element's
// timeout (the TTL floor here), before the client connects; a UDP rule's
// addresses are not there; reapFollowed removes the entries whose time
// passed over a minute ago and keeps the others.
func TestFollowedForNameCheck(t *testing.T) {
	l := newFollowLab(t, time.Minute, 2*followPool)
	before := bootNow()
	if out, err := l.nobody.Run("dig", "+short", "+tries=1", "rot.lab"); err != nil {
		t.Fatalf("dig: %v %s", err, out)
	}
	var k bpf.FollowAuthKey
	var until uint64
	var tcp, other int
	for it := l.f.objs.Followed.Iterate(); it.Next(&k, &until); {
		if k.Uid == 65534 && k.Proto == plan.ProtoTCP && k.Port == 8080 && until >= before+uint64(time.Minute) && until <= bootNow()+uint64(time.Minute) {
			tcp++
		} else {
			other++
		}
	}
	if tcp != 1 || other != 0 {
		t.Fatalf("followed holds %d entries for the answer, %d others", tcp, other)
	}
	if out, err := l.nobody.Run("dig", "+short", "+tries=1", "udp.lab"); err != nil {
		t.Fatalf("dig: %v %s", err, out)
	}
	lab.WaitFor(t, func() bool { return l.f.Stats().Accepted >= 2 })
	n := 0
	for it := l.f.objs.Followed.Iterate(); it.Next(&k, &until); {
		n++
	}
	if n != 1 {
		t.Fatalf("a UDP rule's address is in the name check's view: %d entries", n)
	}
	old, fresh := followedKey(1, "10.77.9.1", 6, 443), followedKey(1, "10.77.9.2", 6, 443)
	if err := l.f.objs.Followed.Put(old, bootNow()-uint64(2*followedGrace)); err != nil {
		t.Fatal(err)
	}
	if err := l.f.objs.Followed.Put(fresh, bootNow()-uint64(followedGrace/2)); err != nil {
		t.Fatal(err)
	}
	if got := l.f.reapFollowed(); got != 1 {
		t.Fatalf("reaped %d entries, want 1", got)
	}
	if err := l.f.objs.Followed.Lookup(fresh, &until); err != nil {
		t.Fatalf("the entry within its grace went: %v", err)
	}
}
