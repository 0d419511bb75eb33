package dnspolicy

import (
	"encoding/binary"
	"testing"
)

// TestSipHashVectors: sipHash is SipHash (the reference vectors of
// SipHash-2-4, key 00..0f, messages 00, 00 01, ...), so SipHash-1-3 is the
// same function with fewer rounds.
func TestSipHashVectors(t *testing.T) {
	var kb [16]byte
	for i := range kb {
		kb[i] = byte(i)
	}
	key := Key{binary.LittleEndian.Uint64(kb[:8]), binary.LittleEndian.Uint64(kb[8:])}
	msg := make([]byte, 15)
	for i := range msg {
		msg[i] = byte(i)
	}
	for n, want := range map[int]uint64{0: 0x726fdb47dd0e0e31, 15: 0xa129ca6149be45e5} {
		if got := sipHash(key, msg[:n], 2, 4); got != want {
			t.Errorf("SipHash-2-4 of %d bytes: %#x, want %#x", n, got, want)
		}
	}
}

// TestMatchesLowersASCIIOnly: the explanation of a verdict agrees with the
// kernel, which lowers A-Z only: the Kelvin sign is no "k".
func TestMatchesLowersASCIIOnly(t *testing.T) {
	es, _ := Dedup([]Entry{{UID: 1, Name: "key.lab"}})
	if Matches(es, 1, "\u212aey.lab") {
		t.Error("\\u212aey.lab matched key.lab")
	}
	if !Matches(es, 1, "KEY.Lab.") {
		t.Error("KEY.Lab. did not match key.lab")
	}
}
