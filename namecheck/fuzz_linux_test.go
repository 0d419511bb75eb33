//go:build linux

package namecheck_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/namecheck"
)

// FuzzParse runs the kernel's parser (BPF_PROG_TEST_RUN) on arbitrary
// first bytes and checks that:
//   - a name it gives is canonical, hashed as user space hashes names,
//     and is what Go's TLS server (the SNI) or HTTP server (the Host) reads
//     from the same bytes when they read one;
//   - it decides on a prefix only what it decides on the whole: a prefix
//     gives "more" or the same result (what gathering a split first
//     message relies on).
func FuzzParse(f *testing.F) {
	p := newParser(f)
	f.Add(clientHello("name1.lab"), uint16(100))
	f.Add(clientHello("A.B-c.example.COM"), uint16(300))
	f.Add(clientHello(""), uint16(7))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), uint16(20))
	f.Add([]byte("POST /"+strings.Repeat("p", 1000)+" HTTP/1.1\r\nX: y\r\nhOsT:\tName.Lab\r\n\r\n"), uint16(1010))
	f.Add([]byte("GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n"), uint16(3))
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01"), uint16(4))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		if len(data) == 0 || len(data) > namecheck.MaxParse {
			return
		}
		r, err := p.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome == "name" {
			if r.Name != namecheck.Canonical(r.Name) || r.Hash != namecheck.NameHash(r.Name) || strings.ContainsAny(r.Name, " :/\x00") {
				t.Fatalf("name %q hash %x", r.Name, r.Hash)
			}
			if ref, ok := reference(data); ok && namecheck.Canonical(ref) != r.Name {
				t.Fatalf("the kernel read %q, Go's server reads %q", r.Name, ref)
			}
		}
		if k := int(cut) % len(data); k > 0 {
			pr, err := p.Parse(data[:k])
			if err != nil {
				t.Fatal(err)
			}
			if pr.Outcome != "more" && pr != r {
				t.Fatalf("prefix of %d bytes: %+v, whole: %+v", k, pr, r)
			}
		}
	})
}

// reference is the name Go's servers read from the first bytes: the SNI
// of a ClientHello, or the Host of a request (without its port).
func reference(data []byte) (string, bool) {
	if data[0] == 0x16 {
		var sni string
		found := false
		c := tls.Server(&feed{r: bytes.NewReader(data)}, &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, found = hi.ServerName, true
			return nil, errors.New("enough")
		}})
		_ = c.Handshake()
		return sni, found && sni != ""
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
	if err != nil || req.Host == "" {
		return "", false
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return host, true
}

type feed struct {
	net.Conn
	r io.Reader
}

func (f *feed) Read(p []byte) (int, error)       { return f.r.Read(p) }
func (f *feed) Write(p []byte) (int, error)      { return len(p), nil }
func (f *feed) Close() error                     { return nil }
func (f *feed) SetDeadline(time.Time) error      { return nil }
func (f *feed) SetReadDeadline(time.Time) error  { return nil }
func (f *feed) SetWriteDeadline(time.Time) error { return nil }
func (f *feed) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (f *feed) LocalAddr() net.Addr              { return &net.TCPAddr{} }
