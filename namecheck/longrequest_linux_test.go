//go:build linux

package namecheck_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/egresskit/egress/namecheck"
)

// TestNameCheckLongRequestFailsClosed: the kernel gathers at most 4096
// bytes before the name; a plain HTTP request whose Host comes later
// (an allowed name, after a 5000-byte request line) is refused as showing
// no name, not passed unchecked. Under the bound it passes (3000 bytes,
// TestNameCheckEnforce).
func TestNameCheckLongRequestFailsClosed(t *testing.T) {
	l := newLab(t)
	l.set(namecheck.Enforce)
	before := l.stats()
	req := "GET /" + strings.Repeat("x", 5000) + " HTTP/1.1\r\nHost: name1.lab\r\nConnection: close\r\n\r\n"
	l.blocked("raw", hex.EncodeToString([]byte(req)), "80")
	if l.saw("host name1.lab") {
		t.Fatal("the server read the request")
	}
	if s := l.stats(); s.NoName <= before.NoName {
		t.Fatalf("not counted as no name: %+v", s)
	}
	l.awaitNoName("http")
}
