//go:build linux

package nft

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// Netlink is the kernel's nftables in one network namespace, spoken to
// over netlink (google/nftables): no nft binary is needed.
type Netlink struct {
	t Target
	// dial, in tests, answers the netlink messages instead of a kernel.
	dial nltest.Func
	// viaLibrary, in tests, sends a whole table through google/nftables
	// rather than the batch writer.
	viaLibrary bool
}

// Open returns the nftables of the target namespace. Each operation opens
// a connection of its own.
func Open(t Target) *Netlink { return &Netlink{t: t} }

// Target is the network namespace.
func (n *Netlink) Target() Target { return n.t }

// OpenNetns opens the target's namespace file: fd is -1 for the caller's
// own namespace.
func (t Target) OpenNetns() (fd int, closeFn func(), err error) {
	p := t.Path()
	if p == "" {
		return -1, func() {}, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return -1, nil, fmt.Errorf("open %s: %w", t, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		f.Close()
		return -1, nil, fmt.Errorf("open %s: not a network namespace file", t)
	}
	return int(f.Fd()), func() { f.Close() }, nil
}

// dialNetlink opens a netlink socket of family (unix.NETLINK_ROUTE, ...)
// in the target's namespace.
func (t Target) dialNetlink(family int) (*netlink.Conn, error) {
	fd, closeFn, err := t.OpenNetns()
	if err != nil {
		return nil, err
	}
	defer closeFn() // the socket keeps its namespace
	cfg := &netlink.Config{}
	if fd >= 0 {
		cfg.NetNS = fd
	}
	return netlink.Dial(family, cfg)
}

// sockBuffer is the netlink socket buffer size: a 100,000-element batch is
// tens of megabytes, and the kernel answers it with one ack per message.
const sockBuffer = 64 << 20

// raiseBuffers raises the netlink socket's buffers to sockBuffer.
func raiseBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, sockBuffer); e != nil {
				serr = fmt.Errorf("raise netlink socket buffer: %w", e)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// conn opens a netlink connection to nftables in the target namespace.
// Each operation uses a fresh connection: after an error a lasting one
// can hang on the next flush.
func (n *Netlink) conn() (*nftables.Conn, func(), error) {
	if n.dial != nil {
		c, err := nftables.New(nftables.WithTestDial(n.dial))
		return c, func() {}, err
	}
	opts := []nftables.ConnOption{nftables.WithSockOptions(raiseBuffers)}
	fd, closeFn, err := n.t.OpenNetns()
	if err != nil {
		return nil, nil, err
	}
	if fd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		closeFn()
		return nil, nil, fmt.Errorf("open nftables netlink in %s: %w", n.t, err)
	}
	return c, closeFn, nil
}

func isNotFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)
}

// IsNotFound reports whether err says an object is not in the kernel.
func IsNotFound(err error) bool { return isNotFound(err) }

// ourTable looks up our table: nil, and no error, when it is not there.
func (n *Netlink) ourTable(c *nftables.Conn, table string) (*nftables.Table, error) {
	tab, err := c.ListTableOfFamily(table, nftables.TableFamilyINet)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table inet %s in %s: %w", table, n.t, err)
	}
	return tab, nil
}

// batch runs op on a fresh connection and flushes what it queued.
func (n *Netlink) batch(op func(*nftables.Conn) error) error {
	c, done, err := n.conn()
	if err != nil {
		return err
	}
	defer done()
	if err := op(c); err != nil {
		return err
	}
	return c.Flush()
}
