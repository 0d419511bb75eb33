// Package dnspolicy keeps DNS from being an open door: a per-user
// allow-list of the names each user may ask for (dns_policy audit or
// enforce), checked in the kernel on every query a socket of the cgroup
// sends (bpf/dnspolicy.c), and the reports of the queries it stopped.
package dnspolicy

import (
	"fmt"
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

// fnvOffset and fnvPrime are FNV-1a 64's.
const (
	fnvOffset = 0xcbf29ce484222325
	fnvPrime  = 0x100000001b3
)

// Hash is what the kernel computes of a question name: FNV-1a 64 of the
// normalized name ("*.suffix" for a wildcard), with seed as the offset
// basis (the kernel's hash_seed: random at each load, so a name whose
// hash is an allowed one's cannot be computed from outside).
func Hash(seed uint64, name string) uint64 {
	h := seed
	for _, c := range []byte(strings.ToLower(strings.TrimSuffix(name, "."))) {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
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
	n := strings.ToLower(strings.TrimSuffix(name, "."))
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
