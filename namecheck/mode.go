// Package namecheck checks, in the kernel, the name a TCP client presents
// on its first data (the TLS ClientHello's server_name, or the Host header
// of a plain HTTP request) against the names its user learned for that
// address, protocol and port: on an address shared by many names (a CDN,
// a reverse proxy) an address allow-list alone opens them all. See
// bpf/namecheck.c for the program and README "Name check" for what is
// covered.
package namecheck

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// Mode says what a mismatch does.
type Mode uint8

// Modes; the values are the kernel's.
const (
	Off     Mode = 0 // names are not checked
	Audit   Mode = 1 // a mismatch is logged and passes
	Enforce Mode = 2 // a mismatch is logged and the connection's segments are dropped
)

func (m Mode) String() string {
	switch m {
	case Off:
		return "off"
	case Audit:
		return "audit"
	case Enforce:
		return "enforce"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode reads off, audit or enforce ("" is off).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "off":
		return Off, nil
	case "audit":
		return Audit, nil
	case "enforce":
		return Enforce, nil
	}
	return Off, fmt.Errorf("name_check %q: want off, audit or enforce", s)
}

// MarshalText writes the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads a mode's name.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	*m = v
	return err
}

// Canonical is the form of a name the kernel compares: lower case,
// without a trailing dot.
func Canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// NameHash is the hash the kernel computes of a presented name (FNV-1a 64
// of its canonical form); the DNS follower hashes names the same way.
func NameHash(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(Canonical(name)))
	return h.Sum64()
}
