//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// answerWait bounds the wait for the kernel's answers. nfnetlink runs a
// batch inside the sendmsg that carries it, so they are queued on the
// socket by the time it returns; this only guards against a hang.
const answerWait = time.Minute

// maxReported is how many failed messages an error lists.
const maxReported = 5

// send sends the batch in the target's namespace as one transaction and
// reads the kernel's answer to every message: an error in any message
// fails the batch (the kernel then applies none of it) and is reported.
func (w *batchWriter) send(t Target) error {
	if w.err != nil {
		return w.err
	}
	bufs := w.buffers()
	total := w.size()
	c, err := t.dialNetlink(unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", t, err)
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	if err := batchSocket(rc, total); err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		var sent int
		sent, serr = unix.SendmsgBuffers(int(fd), bufs, nil, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}, 0)
		if serr == unix.EAGAIN {
			return false
		}
		if serr == nil && sent != total {
			serr = fmt.Errorf("sent %d of the batch's %d bytes", sent, total)
		}
		return true
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("send a batch of %d bytes: %w", total, err)
	}
	if err := c.SetReadDeadline(time.Now().Add(answerWait)); err != nil {
		return err
	}
	return w.answers(rc)
}

// batchSocket sizes the socket's buffers for a batch of total bytes (a
// sendmsg may carry up to the send buffer) and the answers to it, and
// asks for short error answers with the kernel's message.
func batchSocket(rc syscall.RawConn, total int) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		opts := []struct{ level, opt, v int }{
			{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, max(sockBuffer, total)},
			{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuffer},
			{unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1},
			{unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1},
		}
		for _, o := range opts {
			if e := unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); e != nil && serr == nil {
				serr = fmt.Errorf("set netlink socket option %d: %w", o.opt, e)
			}
		}
	})
	return errors.Join(err, serr)
}

// answers reads the kernel's answer to each message that asked for one.
// The kernel answers every message of a batch, even after an error, and
// a failed commit (or an allocation failure) with one error on the batch
// itself; after the first error the rest is read without waiting.
func (w *batchWriter) answers(rc syscall.RawConn) error {
	pending := 0
	for i := range w.msgs {
		if w.msgs[i].ack {
			pending++
		}
	}
	buf := make([]byte, 64<<10)
	var errs []error
	failed := 0
	for pending > 0 {
		n, err := recvAnswer(rc, buf, failed > 0)
		if failed > 0 && err == unix.EAGAIN {
			break
		}
		if err != nil {
			return w.answerError(err, pending, errs)
		}
		for b := buf[:n]; len(b) >= 16; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < 16 || l > len(b) {
				break
			}
			p, e := w.answer(b[:l])
			pending -= p
			if e != nil {
				if failed++; failed <= maxReported {
					errs = append(errs, e)
				}
			}
			b = b[min(align4(l), len(b)):]
		}
	}
	if failed > maxReported {
		errs = append(errs, errors.New("and "+strconv.Itoa(failed-maxReported)+" more failed messages"))
	}
	if failed == 0 && pending > 0 {
		return fmt.Errorf("the kernel answered %d messages of the batch too few", pending)
	}
	return errors.Join(errs...)
}

// recvAnswer reads one answer; without waiting when nowait.
func recvAnswer(rc syscall.RawConn, buf []byte, nowait bool) (int, error) {
	var n int
	var rerr error
	if nowait {
		err := rc.Control(func(fd uintptr) {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		})
		return n, errors.Join(err, rerr)
	}
	err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// answerError is a failed read of the answers: after the batch was sent,
// so the kernel may have applied it.
func (w *batchWriter) answerError(err error, pending int, errs []error) error {
	why := err.Error()
	if errors.Is(err, unix.ENOBUFS) {
		why = "its answers overflowed the socket's buffer"
	}
	return errors.Join(append(errs, fmt.Errorf("read the kernel's answers to the batch (%d missing): %s: %w: %w", pending, why, errAnswersLost, err))...)
}

// errAnswersLost: the batch was sent, but not all of the kernel's answers
// could be read: it may or may not have applied it.
var errAnswersLost = errors.New("the table may or may not have changed")

// answer reads one answer message: it returns 1 when it answers a message
// that asked for an acknowledgement, and the message's error.
func (w *batchWriter) answer(m []byte) (int, error) {
	if binary.NativeEndian.Uint16(m[4:6]) != unix.NLMSG_ERROR || len(m) < 20 {
		return 0, nil
	}
	seq := binary.NativeEndian.Uint32(m[8:12])
	errno := -int32(binary.NativeEndian.Uint32(m[16:20]))
	if seq == 0 || int(seq) > len(w.msgs) {
		if errno != 0 {
			return 0, fmt.Errorf("the kernel refused a message it did not say: %w", unix.Errno(errno))
		}
		return 0, nil
	}
	msg := &w.msgs[seq-1]
	got := 0
	if msg.ack && !msg.answered {
		msg.answered, got = true, 1
	}
	if errno == 0 {
		return got, nil
	}
	what := msg.String()
	if text := extackText(m); text != "" {
		what += " (" + text + ")"
	}
	return got, fmt.Errorf("%s: %w", what, unix.Errno(errno))
}

// extackText is the kernel's message in an error answer, if any.
func extackText(m []byte) string {
	flags := binary.NativeEndian.Uint16(m[6:8])
	if flags&unix.NLM_F_ACK_TLVS == 0 || flags&unix.NLM_F_CAPPED == 0 || len(m) < 36 {
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(m[36:])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NLMSGERR_ATTR_MSG {
			return ad.String()
		}
	}
	return ""
}

// String says what the message did.
func (m batchMsg) String() string {
	if m.seq == 1 {
		return "the transaction"
	}
	if m.set != "" {
		return "add elements " + strconv.Itoa(m.first+1) + "-" + strconv.Itoa(m.last+1) + " to set " + m.set
	}
	names := map[uint16]string{
		unix.NFT_MSG_NEWTABLE: "add table", unix.NFT_MSG_DELTABLE: "delete table", unix.NFT_MSG_NEWSET: "add set",
		unix.NFT_MSG_NEWSETELEM: "add elements", unix.NFT_MSG_NEWCHAIN: "add chain", unix.NFT_MSG_NEWRULE: "add rule",
	}
	what, ok := names[m.typ&0xff]
	if !ok {
		what = "message type " + strconv.Itoa(int(m.typ&0xff))
	}
	return what + " (message " + strconv.Itoa(int(m.seq)) + " of the batch)"
}
