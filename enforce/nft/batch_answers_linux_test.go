//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
)

// answerBatch is a batch of a table message and two element messages
// (sequence numbers: 1 the batch, 2 the table, 3 and 4 the elements, 5
// the end), and a socket its answers come from.
func answerBatch(t *testing.T) (w *batchWriter, peer int, f *os.File) {
	t.Helper()
	w = newBatchWriter()
	t.Cleanup(w.release)
	w.capture([]netlink.Message{{Header: netlink.Header{Type: unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE, Flags: nlmsgFlagsNew}, Data: []byte{1, 0, 0, 0}}})
	s := &nftables.Set{Table: tableOf("egress"), Name: "allow4", ID: 7}
	elems := make(planElems, 700)
	for i := range elems {
		elems[i] = plan.Element{UID: uint32(i), IP: netipAddr4(i), Proto: 6, Port: 443, Comment: strings.Repeat("c", 60)}
	}
	w.elements(s, elems)
	w.buffers()
	if len(w.msgs) != 5 {
		t.Fatalf("%d messages, want 5", len(w.msgs))
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f = os.NewFile(uintptr(fds[0]), "answers")
	t.Cleanup(func() { f.Close(); unix.Close(fds[1]) })
	return w, fds[1], f
}

// answerMsg is the kernel's answer to message seq: errno 0 acknowledges.
func answerMsg(seq uint32, errno unix.Errno) []byte {
	b := make([]byte, 36)
	binary.NativeEndian.PutUint32(b[0:4], 36)
	binary.NativeEndian.PutUint16(b[4:6], unix.NLMSG_ERROR)
	binary.NativeEndian.PutUint16(b[6:8], unix.NLM_F_CAPPED)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[16:20], uint32(-int32(errno)))
	binary.NativeEndian.PutUint32(b[28:32], seq)
	return b
}

func readAnswers(t *testing.T, w *batchWriter, peer int, f *os.File, answers ...[]byte) error {
	t.Helper()
	for _, a := range answers {
		if _, err := unix.Write(peer, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return w.answers(rc)
}

// TestBatchAnswers: every message acknowledged is success; an error on
// one message names it and keeps its errno, even when it comes after
// the others' acknowledgements; an error on the batch itself (a failed
// commit) is the transaction's; answers that stop coming say that the
// outcome is unknown, not that the kernel refused.
func TestBatchAnswers(t *testing.T) {
	w, peer, f := answerBatch(t)
	if err := readAnswers(t, w, peer, f, answerMsg(2, 0), answerMsg(3, 0), answerMsg(4, 0)); err != nil {
		t.Errorf("all acknowledged: %v", err)
	}
	w, peer, f = answerBatch(t)
	err := readAnswers(t, w, peer, f, answerMsg(2, 0), answerMsg(3, 0), answerMsg(4, unix.ENOENT))
	if !errors.Is(err, unix.ENOENT) || errors.Is(err, errAnswersLost) || !strings.Contains(err.Error(), "to set allow4") {
		t.Errorf("an element message refused: %v", err)
	}
	w, peer, f = answerBatch(t)
	err = readAnswers(t, w, peer, f, answerMsg(1, unix.ENOMEM))
	if !errors.Is(err, unix.ENOMEM) || !strings.HasPrefix(err.Error(), "the transaction: ") {
		t.Errorf("the batch refused: %v", err)
	}
	w, peer, f = answerBatch(t)
	err = readAnswers(t, w, peer, f, answerMsg(2, 0))
	if !errors.Is(err, errAnswersLost) || !strings.Contains(err.Error(), "2 missing") {
		t.Errorf("answers missing: %v", err)
	}
}

func netipAddr4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}
