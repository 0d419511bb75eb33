// Package dnspolicy keeps DNS from being an open door: a per-user
// allow-list of the names each user may ask for (dns_policy audit or
// enforce), checked in the kernel on every query a socket of the cgroup
// sends (bpf/dnspolicy.c), and the reports of the queries it stopped.
package dnspolicy

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Mode is the dns_policy setting.
type Mode string

// The modes: off (no check), audit (report, let pass), enforce (report,
// drop).
const (
	Off     Mode = "off"
	Audit   Mode = "audit"
	Enforce Mode = "enforce"
)

// ParseMode reads a dns_policy value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return Off, nil
	case Off, Audit, Enforce:
		return m, nil
	}
	return "", fmt.Errorf("dns_policy: %q is not off, audit or enforce", s)
}

// AllUsers is the uid of an entry for every user.
const AllUsers = 0xffffffff

// MaxSuffixLabels is how many labels a wildcard's suffix may have: the
// kernel tries "*.suffix" for the last MaxSuffixLabels labels of a name.
const MaxSuffixLabels = 8

// maxText is the longest name in text form (RFC 1035: 255 bytes on the
// wire, 253 characters without the trailing dot).
const maxText = 253

// Entry allows one user (or AllUsers) one name, or every name under a
// suffix ("*.example.com": x.example.com, a.b.example.com, not
// example.com itself).
type Entry struct {
	UID  uint32 `json:"uid"`
	Name string `json:"name"`
	// Source says why: "learned", "follow_names", "dns_allow".
	Source string `json:"source"`
}

// Normalize lowers name and drops its trailing dot; it refuses what the
// kernel would never match: empty labels, a label over 63 characters, a
// name over 253, a "*" anywhere but as the whole first label, a wildcard
// whose suffix has more than MaxSuffixLabels labels.
func Normalize(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if n == "" {
		return "", fmt.Errorf("dns name %q: empty", name)
	}
	if len(n) > maxText {
		return "", fmt.Errorf("dns name %q: longer than %d characters", name, maxText)
	}
	labels := strings.Split(n, ".")
	for i, l := range labels {
		switch {
		case l == "":
			return "", fmt.Errorf("dns name %q: empty label", name)
		case len(l) > 63:
			return "", fmt.Errorf("dns name %q: a label longer than 63 characters", name)
		case l == "*" && i == 0:
		case strings.ContainsAny(l, "*\x00"):
			return "", fmt.Errorf("dns name %q: a wildcard may only be the whole first label (*.example.com)", name)
		}
		for _, c := range []byte(l) {
			if c < 0x21 || c > 0x7e {
				return "", fmt.Errorf("dns name %q: character %q is not printable ASCII", name, c)
			}
		}
	}
	if labels[0] == "*" {
		if len(labels) < 2 {
			return "", fmt.Errorf("dns name %q: a wildcard needs a suffix (*.example.com)", name)
		}
		if len(labels)-1 > MaxSuffixLabels {
			return "", fmt.Errorf("dns name %q: a wildcard's suffix may have at most %d labels", name, MaxSuffixLabels)
		}
	}
	return n, nil
}

// Key is the kernel's SipHash key (hash_k0, hash_k1): random at each
// install, so a name whose hash is an allowed one's cannot be computed
// from outside.
type Key [2]uint64

// Hash is what the kernel computes of a question name: SipHash-1-3 under
// key of the name in wire form (each label after its length, then a
// zero), lowered, without its trailing dot. A wildcard "*.suffix" is
// looked up by its suffix's hash under the kind AK_SUFFIX (see hashOf).
func Hash(key Key, name string) uint64 {
	n := strings.TrimSuffix(name, ".")
	w := make([]byte, 0, len(n)+2)
	if n != "" {
		for l := range strings.SplitSeq(asciiLower(n), ".") {
			w = append(w, byte(len(l)))
			w = append(w, l...)
		}
	}
	return sipHash(key, append(w, 0), 1, 3)
}

// asciiLower lowers A-Z only, as the kernel does: strings.ToLower would
// also fold other bytes (the Kelvin sign U+212A to "k"), so a name the
// kernel refuses would seem to match.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// The kinds of an allow-map key (bpf/dnspolicy.c's enum allow_kind).
const (
	kindName   = 0 // the name itself
	kindSuffix = 1 // every name under the suffix ("*.suffix")
)

// hashOf is the kind and hash of a normalized entry name in the allow map.
func hashOf(key Key, name string) (kind uint32, hash uint64) {
	if suffix, ok := strings.CutPrefix(name, "*."); ok {
		return kindSuffix, Hash(key, suffix)
	}
	return kindName, Hash(key, name)
}

// sipHash is SipHash-c-d of b (c rounds a block, d to finish): the
// kernel's is SipHash-1-3.
func sipHash(key Key, b []byte, c, d int) uint64 {
	v0, v1 := key[0]^0x736f6d6570736575, key[1]^0x646f72616e646f6d
	v2, v3 := key[0]^0x6c7967656e657261, key[1]^0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13) ^ v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16) ^ v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21) ^ v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17) ^ v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(b)
	for ; len(b) >= 8; b = b[8:] {
		m := binary.LittleEndian.Uint64(b)
		v3 ^= m
		for range c {
			round()
		}
		v0 ^= m
	}
	m := uint64(n) << 56
	for i, c := range b {
		m |= uint64(c) << (8 * i)
	}
	v3 ^= m
	for range c {
		round()
	}
	v0 ^= m
	v2 ^= 0xff
	for range d {
		round()
	}
	return v0 ^ v1 ^ v2 ^ v3
}

// Dedup normalizes entries, drops the invalid ones (returned as errors)
// and the repeats, and sorts them by uid and name.
func Dedup(in []Entry) (out []Entry, bad []error) {
	seen := map[[2]any]bool{}
	for _, e := range in {
		n, err := Normalize(e.Name)
		if err != nil {
			bad = append(bad, fmt.Errorf("%s entry of uid %d: %w", e.Source, e.UID, err))
			continue
		}
		k := [2]any{e.UID, n}
		if seen[k] {
			continue
		}
		seen[k] = true
		e.Name = n
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].UID != out[j].UID {
			return out[i].UID < out[j].UID
		}
		return out[i].Name < out[j].Name
	})
	return out, bad
}

// Matches reports whether name is allowed to uid by entries, as the
// kernel decides (for tests and for reconcile's explanations).
func Matches(entries []Entry, uid uint32, name string) bool {
	n := asciiLower(strings.TrimSuffix(name, "."))
	labels := strings.Split(n, ".")
	for _, e := range entries {
		if e.UID != uid && e.UID != AllUsers {
			continue
		}
		if e.Name == n {
			return true
		}
		if suffix, ok := strings.CutPrefix(e.Name, "*."); ok {
			k := strings.Count(suffix, ".") + 1
			if k < len(labels) && strings.Join(labels[len(labels)-k:], ".") == suffix {
				return true
			}
		}
	}
	return false
}
