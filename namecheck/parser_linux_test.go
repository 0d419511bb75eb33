//go:build linux

package namecheck_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
)

func newParser(t testing.TB) *namecheck.Parser {
	t.Helper()
	lab.Require(t)
	p, err := namecheck.NewParser()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestParserCases(t *testing.T) {
	p := newParser(t)
	hello := clientHello("Name1.Lab.")
	cut := bytes.Index(hello, []byte("Name1.Lab")) - 3 // in the server_name extension, before the name
	long := "GET /" + strings.Repeat("a", 2500) + " HTTP/1.1\r\nUser-Agent: x\r\nHost: Name2.lab:8080\r\n\r\n"
	cases := []struct {
		what    string
		data    []byte
		outcome string
		kind    string
		name    string
	}{
		{"tls sni", hello, "name", "tls", "name1.lab"},
		{"tls without sni", clientHello(""), "none", "tls", ""},
		{"tls cut before the name", hello[:cut], "more", "tls", ""},
		{"tls cut in the name", hello[:cut+6], "more", "tls", ""},
		{"tls record header only", hello[:5], "more", "tls", ""},
		{"http host", []byte("GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"), "name", "http", "example.com"},
		{"http host lower header, spaces", []byte("POST /x HTTP/1.1\r\nhost:   a-b.c_d.lab  \r\n\r\n"), "name", "http", "a-b.c_d.lab"},
		{"http host after a long request line", []byte(long), "name", "http", "name2.lab"},
		{"http no host", []byte("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"), "none", "http", ""},
		{"http host unfinished", []byte("GET / HTTP/1.1\r\nHost: exam"), "more", "http", ""},
		{"http headers unfinished", []byte("GET / HTTP/1.1\r\nAccept: */*\r\n"), "more", "http", ""},
		{"http absolute form", []byte("GET http://other.lab/ HTTP/1.1\r\nHost: name1.lab\r\n\r\n"), "none", "http", ""},
		{"http bad host", []byte("GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n"), "none", "http", ""},
		{"http empty labels", []byte("GET / HTTP/1.1\r\nHost: a..b\r\n\r\n"), "none", "http", ""},
		// The name is the whole value but for a port and spaces: a second
		// word (which a server reads as part of the Host, and refuses) or
		// junk after the port is no name (FuzzParse found "Host:0 0" read
		// as "0").
		{"http two words", []byte("GET / HTTP/1.1\r\nHost: name1.lab evil.lab\r\n\r\n"), "none", "http", ""},
		{"http junk after port", []byte("GET / HTTP/1.1\r\nHost: name1.lab:80x\r\n\r\n"), "none", "http", ""},
		{"http port and spaces", []byte("GET / HTTP/1.1\r\nHost: name1.lab:80 \t\r\n\r\n"), "name", "http", "name1.lab"},
		{"http trailing spaces", []byte("GET / HTTP/1.1\r\nHost: name1.lab  \n\n"), "name", "http", "name1.lab"},
		{"http tail unfinished", []byte("GET / HTTP/1.1\r\nHost: name1.lab "), "more", "http", ""},
		// A Host line a folded line continues (obs-fold) is read joined by
		// servers that join it ("name1.lab evil.lab"): no name (FuzzParse
		// found "Host:0\n 0"). Until the next line's first byte is seen,
		// more; a CR without its LF is no line end a server reads.
		{"http folded host", []byte("GET / HTTP/1.1\r\nHost: name1.lab\r\n evil.lab\r\n\r\n"), "none", "http", ""},
		{"http folded host, tab", []byte("GET / HTTP/1.1\nHost: name1.lab:80\n\tevil.lab\n\n"), "none", "http", ""},
		{"http host line unfinished", []byte("GET / HTTP/1.1\r\nHost: name1.lab\r\n"), "more", "http", ""},
		{"http host then a header", []byte("GET / HTTP/1.1\r\nHost: name1.lab\r\nX: y\r\n\r\n"), "name", "http", "name1.lab"},
		{"http bare CR", []byte("GET / HTTP/1.1\r\nHost: name1.lab\rX: y\r\n\r\n"), "none", "http", ""},
		{"tls fragmented over records", fragmented(hello), "none", "tls", ""},
		{"garbage", []byte("\x00\x01\x02garbage"), "none", "none", ""},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), "none", "http", ""},
	}
	for _, c := range cases {
		r, err := p.Parse(c.data)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if r.Outcome != c.outcome || r.Kind != c.kind || r.Name != c.name {
			t.Errorf("%s: got %+v, want %s %s %q", c.what, r, c.outcome, c.kind, c.name)
		}
		if r.Outcome == "name" && r.Hash != namecheck.NameHash(c.name) {
			t.Errorf("%s: hash %x, want %x", c.what, r.Hash, namecheck.NameHash(c.name))
		}
	}
}

// fragmented is a ClientHello record cut into two records (the handshake
// message spans them), which servers reassemble.
func fragmented(rec []byte) []byte {
	body := rec[5:]
	cut := len(body) / 2
	out := append([]byte{0x16, 3, 1, byte(cut >> 8), byte(cut)}, body[:cut]...)
	out = append(out, 0x16, 3, 1, byte((len(body)-cut)>>8), byte(len(body)-cut))
	return append(out, body[cut:]...)
}
