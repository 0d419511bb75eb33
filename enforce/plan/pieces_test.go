package plan

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/egresskit/egress/store"
)

// piecesOf encodes p with JSONPieces in pieces of piece bytes, and says
// how many pieces there were; it fails when a piece but the last is
// short, or when put is given back a buffer it still holds.
func piecesOf(t *testing.T, p *Plan, piece int) ([]byte, int) {
	t.Helper()
	var out []byte
	pieces, free := 0, [][]byte{nil, nil}
	err := p.JSONPieces(piece, func(b []byte) []byte {
		if b != nil {
			if pieces > 0 && len(out) > 0 && len(b) == 0 {
				t.Errorf("piece %d is empty", pieces)
			}
			out = append(out, b...)
			pieces++
			clear(b[:cap(b)]) // a buffer given back is written from its start
			free = append(free, b)
		}
		next := free[0]
		free = free[1:]
		return next
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, pieces
}

// TestJSONPiecesIsJSON: the pieces joined are what JSON writes, byte for
// byte, at any piece size, with and without name rules and strings that
// need escapes; no more pieces than piece bytes each make.
func TestJSONPiecesIsJSON(t *testing.T) {
	plans := []*Plan{jsonPlan("plain", false), jsonPlan(`q"uote\back<>&`, true), jsonPlan("é\u2028\xff", true)}
	var flows []store.Flow
	for i := range 3000 {
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: uint32(i % 7), Proto: ProtoTCP,
			IP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 443}, Hits: 1, Hostnames: []string{fmt.Sprintf("h%d.example", i)}})
	}
	plans = append(plans, Build(flows, Options{Mode: ModeEnforce}))
	for i, p := range plans {
		want, err := p.JSON()
		if err != nil {
			t.Fatal(err)
		}
		for _, piece := range []int{1, 100, 4096, 1 << 20} {
			got, pieces := piecesOf(t, p, piece)
			if !bytes.Equal(got, want) {
				t.Fatalf("plan %d, pieces of %d: %d bytes differ from JSON's %d", i, piece, len(got), len(want))
			}
			if limit := len(want)/piece + 1; pieces > limit || (piece == 1<<20 && pieces != 1) {
				t.Errorf("plan %d, pieces of %d: %d pieces of %d bytes", i, piece, pieces, len(want))
			}
		}
	}
}

// failingWriter fails its writes after n bytes.
type failingWriter struct{ n int }

var errWrite = errors.New("disk full")

func (w *failingWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		return 0, errWrite
	}
	w.n -= len(b)
	return len(b), nil
}

// TestWriteTextIsText: WriteText writes what Text writes; it fails as
// Text does, and with the writer's error.
func TestWriteTextIsText(t *testing.T) {
	var flows []store.Flow
	for i := range 30000 {
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: uint32(i % 7), Proto: ProtoTCP,
			IP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 443}, Hits: 1, Hostnames: []string{fmt.Sprintf("h%d.example", i)}})
	}
	small := jsonPlan("plain", true)
	small.Sets[0].Elements = small.Sets[0].Elements[:len(small.Sets[0].Elements)-1] // the one without an address
	for _, p := range []*Plan{small, Build(flows, Options{Mode: ModeAudit})} {
		var want, got bytes.Buffer
		if err := p.Text(&want); err != nil {
			t.Fatal(err)
		}
		if err := p.WriteText(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("WriteText wrote %d bytes that differ from Text's %d", got.Len(), want.Len())
		}
		if err := p.WriteText(&failingWriter{n: want.Len() / 2}); !errors.Is(err, errWrite) {
			t.Errorf("WriteText to a writer that fails: %v, want %v", err, errWrite)
		}
	}
	p := Build(flows[:3], Options{Mode: ModeEnforce})
	p.Rules = append(p.Rules, Rule{Text: "accept; drop", Comment: "two"})
	terr := p.Text(&bytes.Buffer{})
	werr := p.WriteText(&bytes.Buffer{})
	if terr == nil || werr == nil || terr.Error() != werr.Error() || !strings.Contains(werr.Error(), "render the script") {
		t.Errorf("a rule that is not one statement: Text %v, WriteText %v", terr, werr)
	}
}

// TestWriteEncodedIsEncode: WriteEncoded writes what Encode gives, with
// and without name rules, and fails with the writer's error.
func TestWriteEncodedIsEncode(t *testing.T) {
	var flows []store.Flow
	for i := range 5000 {
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: uint32(i % 7), Proto: ProtoTCP,
			IP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 443}, Hits: 1, Hostnames: []string{fmt.Sprintf("h%d.example", i)}})
	}
	for _, follow := range []*FollowOptions{nil, {Mode: FollowBoth}} {
		x := IndexOf(Build(flows, Options{Mode: ModeEnforce, Follow: follow}))
		var got bytes.Buffer
		if err := x.WriteEncoded(&got); err != nil {
			t.Fatal(err)
		}
		want := x.Encode()
		if !bytes.Equal(got.Bytes(), want) || len(want) < 128<<10 {
			t.Fatalf("follow %v: WriteEncoded wrote %d bytes that differ from Encode's %d", follow != nil, got.Len(), len(want))
		}
		if err := x.WriteEncoded(&failingWriter{n: len(want) / 2}); !errors.Is(err, errWrite) {
			t.Errorf("WriteEncoded to a writer that fails: %v, want %v", err, errWrite)
		}
	}
}
