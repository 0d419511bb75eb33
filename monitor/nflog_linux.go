//go:build linux

package monitor

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	nflog "github.com/florianl/go-nflog/v2"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
)

// LogEntry is one packet the default rule logged.
type LogEntry struct {
	Time   time.Time  `json:"time"`
	Action string     `json:"action"` // "drop" or "audit"
	Prefix string     `json:"prefix"`
	UID    *uint32    `json:"uid,omitempty"`
	GID    *uint32    `json:"gid,omitempty"`
	Proto  uint8      `json:"proto"`
	Src    netip.Addr `json:"src"`
	Dst    netip.Addr `json:"dst"`
	Port   uint16     `json:"port"`
	// SrcPort is the packet's source port (tcp, udp).
	SrcPort uint16 `json:"sport,omitempty"`
	// Service is the sending socket's service (its cgroup v2 path cut
	// at the unit, plan.ServiceOf), when WatchOptions.Services found it.
	Service string `json:"service,omitempty"`
}

// DecodePacket fills the protocol, addresses and destination port of e
// from an IPv4 or IPv6 packet starting at the network header.
func (e *LogEntry) DecodePacket(pkt []byte) error {
	if len(pkt) < 1 {
		return fmt.Errorf("decode packet: empty")
	}
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return fmt.Errorf("decode packet: short ipv4 header")
		}
		ihl := int(pkt[0]&0x0f) * 4
		e.Proto = pkt[9]
		e.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		e.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		if ihl >= 20 && len(pkt) >= ihl {
			l4 = pkt[ihl:]
		}
	case 6:
		if len(pkt) < 40 {
			return fmt.Errorf("decode packet: short ipv6 header")
		}
		e.Proto = pkt[6]
		e.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		e.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		l4 = pkt[40:]
	default:
		return fmt.Errorf("decode packet: ip version %d", pkt[0]>>4)
	}
	if (e.Proto == plan.ProtoTCP || e.Proto == plan.ProtoUDP) && len(l4) >= 4 {
		e.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		e.Port = binary.BigEndian.Uint16(l4[2:4])
	}
	return nil
}

// ListenLog subscribes to NFLOG group in the target namespace and calls
// fn for each packet logged with one of our prefixes, until ctx ends.
// ready, if not nil, is closed once the subscription is in place.
func ListenLog(ctx context.Context, t nft.Target, group uint16, ready chan<- struct{}, fn func(LogEntry)) error {
	return listenLog(ctx, t, group, ready, fn, nil)
}

// logLoss hears what the NFLOG socket lost: receive errors (ENOBUFS, the
// socket's buffer overflowed) and the messages they cost, from the gaps in
// the kernel's per-group sequence numbers.
type logLoss interface {
	NoteReceiveError()
	NoteLost(n uint64)
}

// nflogBuffer is the NFLOG socket's receive buffer: room for a burst of
// log messages while the reader is busy.
const nflogBuffer = 4 << 20

// listenLog is ListenLog; loss, when not nil, hears what the socket lost.
func listenLog(ctx context.Context, t nft.Target, group uint16, ready chan<- struct{}, fn func(LogEntry), loss logLoss) error {
	// QThresh 1: hand each packet over at once (the kernel default batches
	// them for up to a second).
	cfg := nflog.Config{Group: group, Copymode: nflog.CopyPacket, Bufsize: 256, QThresh: 1, Timeout: 1, Flags: nflog.FlagSeq}
	if p := t.Path(); p != "" {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("open %s: %w", t, err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	nf, err := nflog.Open(&cfg)
	if err != nil {
		return fmt.Errorf("open nflog group %d in %s: %w", group, t, err)
	}
	defer nf.Close()
	if rc, err := nf.Con.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nflogBuffer)
		})
	}
	var seq uint32
	seqSeen := false
	hook := func(a nflog.Attribute) int {
		if a.Seq != nil && loss != nil {
			if seqSeen && *a.Seq != seq+1 {
				loss.NoteLost(uint64(*a.Seq - seq - 1)) // wraps like the kernel's
			}
			seq, seqSeen = *a.Seq, true
		}
		if a.Prefix == nil {
			return 0
		}
		e := LogEntry{Prefix: *a.Prefix, UID: a.UID, GID: a.GID, Time: time.Now()}
		switch *a.Prefix {
		case plan.PrefixDrop:
			e.Action = "drop"
		case plan.PrefixAudit:
			e.Action = "audit"
		default:
			if !strings.HasPrefix(*a.Prefix, "NFT-EGRESS-") {
				return 0
			}
			e.Action = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(*a.Prefix, "NFT-EGRESS-")))
		}
		if a.Timestamp != nil {
			e.Time = *a.Timestamp
		}
		if a.Payload != nil {
			_ = e.DecodePacket(*a.Payload)
		}
		fn(e)
		return 0
	}
	errfn := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		if loss != nil {
			loss.NoteReceiveError()
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, errfn); err != nil {
		return fmt.Errorf("register nflog group %d: %w", group, err)
	}
	if ready != nil {
		close(ready)
	}
	<-ctx.Done()
	return nil
}
