package namecheck_test

import (
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// capture is a net.Conn that keeps what is written and fails reads.
type capture struct {
	net.Conn
	out []byte
}

func (c *capture) Write(p []byte) (int, error) { c.out = append(c.out, p...); return len(p), nil }
func (c *capture) Read([]byte) (int, error)    { return 0, errors.New("capture: no reads") }
func (c *capture) Close() error                { return nil }
func (c *capture) SetDeadline(time.Time) error { return nil }
func (c *capture) SetReadDeadline(time.Time) error {
	return nil
}
func (c *capture) SetWriteDeadline(time.Time) error { return nil }

// clientHello is the first flight of Go's TLS client for sni ("" sends
// none).
func clientHello(sni string) []byte {
	c := &capture{}
	tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	_ = tc.Handshake()
	return c.out
}
