package dnspolicy

import "math/rand/v2"

// The fast table (bpf/dnspolicy.c dns_allow_fast) holds the exact names of
// the allow-list again, as 64-bit fingerprints in a two-choice cuckoo
// table of buckets of fastSlots: the kernel finds an allowed name with two
// array reads the verifier inlines, instead of a hash map's lookup (calls,
// each return costly on a CPU that mitigates SRSO). It is only an
// accelerator: a name it does not hold is looked up in the hash map as
// before, so a fingerprint the builder could not place costs speed, never
// a verdict.
const (
	fastSlots = 8
	fastMul   = 0x9e3779b97f4a7c15
	fastKicks = 512 // evictions tried for one name before it is left out
)

// fastFP is the kernel's fast_fp: the name's keyed hash xor the uid times
// an odd constant (a bijection of the uid, so one name gives distinct
// users distinct fingerprints), never 0 (an empty slot).
func fastFP(uid uint32, h uint64) uint64 {
	fp := h ^ uint64(uid)*fastMul
	if fp == 0 {
		fp = 1
	}
	return fp
}

// fastBuckets is the table's size for n names: a power of two, at most
// half full.
func fastBuckets(n int) int {
	b := 1
	for b*fastSlots < 2*n {
		b <<= 1
	}
	return b
}

// fastSize sizes the table for n entries (a variable: tests overfill it).
var fastSize = fastBuckets

// fastHome is the two buckets a fingerprint may sit in.
func fastHome(fp uint64, mask uint32) (uint32, uint32) {
	return uint32(fp) & mask, uint32(fp>>32) & mask
}

// hashedEntry is an entry as the allow map keys it: its user, kind and
// keyed hash (see hashOf), computed once for the map and the fast table.
type hashedEntry struct {
	uid, kind uint32
	hash      uint64
}

// hashAll hashes the entries' names with key.
func hashAll(key Key, entries []Entry) []hashedEntry {
	hs := make([]hashedEntry, len(entries))
	for i, e := range entries {
		kind, h := hashOf(key, e.Name)
		hs[i] = hashedEntry{uid: e.UID, kind: kind, hash: h}
	}
	return hs
}

// buildFast places the fingerprints of the exact names among hs (hashed
// with key, which also seeds the evictions) in nb buckets (a power of
// two). It returns the buckets and how many fingerprints it left out.
func buildFast(key Key, hs []hashedEntry, nb int) ([][fastSlots]uint64, int) {
	tab := make([][fastSlots]uint64, nb)
	mask := uint32(nb - 1)
	rng := rand.New(rand.NewPCG(key[0], key[1]))
	seen := map[uint64]bool{}
	left := 0
	for _, e := range hs {
		fp := fastFP(e.uid, e.hash)
		if e.kind != kindName || seen[fp] {
			continue
		}
		seen[fp] = true
		if !fastPlace(tab, mask, fp, rng) {
			left++
		}
	}
	return tab, left
}

// fastPlace puts fp in one of its buckets, moving others to their other
// bucket when both are full; false when a fingerprint (fp or one it moved)
// found no place.
func fastPlace(tab [][fastSlots]uint64, mask uint32, fp uint64, rng *rand.Rand) bool {
	b1, b2 := fastHome(fp, mask)
	b := b1
	for range fastKicks {
		for _, c := range [2]uint32{b1, b2} {
			for i, v := range tab[c] {
				if v == 0 {
					tab[c][i] = fp
					return true
				}
			}
		}
		i := rng.IntN(fastSlots)
		fp, tab[b][i] = tab[b][i], fp
		h1, h2 := fastHome(fp, mask)
		b1, b2 = h1, h2
		if b == h1 {
			b = h2
		} else {
			b = h1
		}
	}
	return false
}

// fastHas is the kernel's fast_has, for tests.
func fastHas(tab [][fastSlots]uint64, uid uint32, h uint64) bool {
	fp := fastFP(uid, h)
	b1, b2 := fastHome(fp, uint32(len(tab)-1))
	for _, c := range [2]uint32{b1, b2} {
		for _, v := range tab[c] {
			if v == fp {
				return true
			}
		}
	}
	return false
}
