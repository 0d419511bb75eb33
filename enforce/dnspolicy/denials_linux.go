//go:build linux

package dnspolicy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// Denial is a query the policy did not allow.
type Denial struct {
	Time    time.Time  `json:"time"`
	UID     uint32     `json:"uid"`
	Name    string     `json:"name"` // as far as it could be read; "" for a malformed one
	QType   uint16     `json:"qtype"`
	Proto   string     `json:"proto"` // udp or tcp
	Server  netip.Addr `json:"server"`
	Dropped bool       `json:"dropped"` // false: audit let it pass
	// Malformed: the query could not be parsed (several questions, a
	// compression pointer, a query split over TCP segments...).
	Malformed bool `json:"malformed"`
}

// Watch reads the denials of the table's policy until ctx ends, and
// calls fn with each. The ring buffer is pinned: denials made while
// nobody watched wait there (as many as fit, the others are counted as
// lost).
func Watch(ctx context.Context, cfg Config, fn func(Denial)) error {
	w, err := OpenWatch(cfg)
	if err != nil {
		return err
	}
	return w.Run(ctx, fn)
}

// A Watcher holds the policy's denials ring open: once OpenWatch has
// returned, removing the policy no longer takes the ring from under it.
type Watcher struct {
	m  *ebpf.Map
	rd *ringbuf.Reader
}

// OpenWatch opens the pinned denials ring of the table's policy.
func OpenWatch(cfg Config) (*Watcher, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	netns, err := netnsCookie(cfg.Target)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(policyDir(cfg.PinRoot, cfg.Table, netns), pinRing)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open the dns denials ring %s (is the dns policy applied?): %w", path, err)
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("read the dns denials ring: %w", err)
	}
	return &Watcher{m: m, rd: rd}, nil
}

// Run calls fn with each denial until ctx ends, then closes the ring.
func (w *Watcher) Run(ctx context.Context, fn func(Denial)) error {
	defer w.m.Close()
	stop := context.AfterFunc(ctx, func() { w.rd.Close() })
	defer stop()
	defer w.rd.Close()
	var clk cgroupbpf.BootClock
	err := cgroupbpf.Ring{Reader: w.rd, Name: "dns denials"}.Each(func(raw []byte) {
		if d, ok := parseDenial(raw, &clk); ok {
			fn(d)
		}
	})
	if ctx.Err() != nil && (err == nil || errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed)) {
		return nil
	}
	return err
}

func parseDenial(raw []byte, clk *cgroupbpf.BootClock) (Denial, bool) {
	var e bpf.DnspolicyDnsDenial
	if len(raw) < int(unsafe.Sizeof(e)) {
		return Denial{}, false
	}
	e = *(*bpf.DnspolicyDnsDenial)(unsafe.Pointer(&raw[0]))
	n := min(int(e.Len), len(e.Name))
	name := make([]byte, n)
	for i := range name {
		name[i] = byte(e.Name[i])
	}
	d := Denial{Time: clk.Wall(e.Ts), UID: e.Uid, QType: e.Qtype, Dropped: e.Dropped == 1, Malformed: e.Reason == 2, Proto: "udp"}
	if e.Proto == 6 {
		d.Proto = "tcp"
	}
	if !d.Malformed {
		d.Name = string(name)
	} else if n > 0 {
		d.Name = string(name) // what could be read before it went wrong
	}
	switch e.Family {
	case 4:
		d.Server = netip.AddrFrom4([4]byte(e.Daddr[:4]))
	case 6:
		d.Server = netip.AddrFrom16(e.Daddr)
	}
	return d, true
}
