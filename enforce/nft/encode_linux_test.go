//go:build linux

package nft

import (
	"encoding/binary"
	"slices"
	"strconv"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// The netlink encoding of a plan, without root: google/nftables writes its
// batch to a test dial (as tailscale's linuxfw tests do), which keeps the
// messages, and the tests read them back as the kernel would.

// wire is a netlink peer that keeps every message sent to it, and answers
// a table lookup with the table when it has one.
type wire struct {
	sent  []netlink.Message
	table string // "" answers a lookup with ENOENT
}

func (w *wire) dial(req []netlink.Message) ([]netlink.Message, error) {
	w.sent = append(w.sent, req...)
	if len(req) == 1 && msgType(req[0]) == unix.NFT_MSG_GETTABLE {
		if w.table == "" {
			return nltest.Error(int(unix.ENOENT), req)
		}
		attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: []byte(w.table + "\x00")}})
		h := req[0].Header
		h.Type = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE)
		return []netlink.Message{{Header: h, Data: append([]byte{unix.NFPROTO_INET, 0, 0, 0}, attrs...)}}, nil
	}
	return req, nil // the acknowledgements
}

func msgType(m netlink.Message) int { return int(m.Header.Type) & 0xff }

// of returns the messages of one type, with their attributes.
func (w *wire) of(typ int) [][]attr {
	var out [][]attr
	for _, m := range w.sent {
		if m.Header.Type>>8 == unix.NFNL_SUBSYS_NFTABLES && msgType(m) == typ {
			out = append(out, attrsOf(m.Data[4:]))
		}
	}
	return out
}

type attr struct {
	typ  uint16
	data []byte
}

func attrsOf(b []byte) []attr {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	var out []attr
	for ad.Next() {
		out = append(out, attr{ad.Type(), ad.Bytes()})
	}
	return out
}

func find(as []attr, typ uint16) []byte {
	for _, a := range as {
		if a.typ == typ {
			return a.data
		}
	}
	return nil
}

// exprs are a rule's expressions: name and attributes.
func exprs(rule []attr) (names []string, data [][]attr) {
	for _, e := range attrsOf(find(rule, unix.NFTA_RULE_EXPRESSIONS)) {
		as := attrsOf(e.data)
		names = append(names, string(find(as, unix.NFTA_EXPR_NAME)[:len(find(as, unix.NFTA_EXPR_NAME))-1]))
		data = append(data, attrsOf(find(as, unix.NFTA_EXPR_DATA)))
	}
	return names, data
}

func cstr(b []byte) string {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return string(b[:n-1])
	}
	return string(b)
}

// encode queues p on a connection to a wire and flushes it.
func encode(t *testing.T, p *plan.Plan) *wire {
	t.Helper()
	w := &wire{}
	c, err := nftables.New(nftables.WithTestDial(w.dial))
	if err != nil {
		t.Fatal(err)
	}
	if err := queue(c, p, nil, nil, Stamp{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestEncodingReplacesTheTableInOneBatch: add, delete and add the table,
// then its sets and chain, and one rule per rule of the plan, in order,
// with its comment; the whole in one batch.
func TestEncodingReplacesTheTableInOneBatch(t *testing.T) {
	for _, c := range plantest.GoldenCases {
		p := c.Plan()
		w := encode(t, p)
		var kinds []int
		for _, m := range w.sent {
			kinds = append(kinds, int(m.Header.Type))
		}
		if kinds[0] != unix.NFNL_MSG_BATCH_BEGIN || kinds[len(kinds)-1] != unix.NFNL_MSG_BATCH_END {
			t.Errorf("%s: not one batch: %v", c.Name, kinds)
		}
		if first := w.sent[1:4]; msgType(first[0]) != unix.NFT_MSG_NEWTABLE || msgType(first[1]) != unix.NFT_MSG_DELTABLE || msgType(first[2]) != unix.NFT_MSG_NEWTABLE {
			t.Errorf("%s: the batch does not begin add, delete, add table", c.Name)
		}
		rules := w.of(unix.NFT_MSG_NEWRULE)
		if len(rules) != len(p.Rules) {
			t.Fatalf("%s: %d rules, want %d", c.Name, len(rules), len(p.Rules))
		}
		for i, r := range rules {
			if got, _ := userdata.GetString(find(r, unix.NFTA_RULE_USERDATA), userdata.TypeComment); got != p.Rules[i].Comment {
				t.Errorf("%s: rule %d comment %q", c.Name, i, got)
			}
			if got := cstr(find(r, unix.NFTA_RULE_TABLE)); got != p.Table {
				t.Errorf("%s: rule %d in table %q", c.Name, i, got)
			}
		}
	}
}

// TestEncodingLogsToTheGroupWithThePrefix: every default rule logs to the
// plan's NFLOG group with its prefix (without the log expression's
// attribute mask, the kernel would log to neither), after a counter, and
// the enforce rule is followed by a drop.
func TestEncodingLogsToTheGroupWithThePrefix(t *testing.T) {
	o := plantest.GoldenCases[2].Plan() // staged: a drop and an audit default
	o.NFLOGGroup = 77
	w := encode(t, o)
	var prefixes []string
	for i, r := range w.of(unix.NFT_MSG_NEWRULE) {
		names, data := exprs(r)
		j := slices.Index(names, "log")
		if (j >= 0) != (o.Rules[i].Kind == plan.RuleDefault) {
			t.Errorf("rule %q: expressions %v", o.Rules[i].Comment, names)
		}
		if j < 0 {
			continue
		}
		group := find(data[j], unix.NFTA_LOG_GROUP)
		if c := slices.Index(names, "counter"); len(group) != 2 || binary.BigEndian.Uint16(group) != 77 || c < 0 || c > j {
			t.Errorf("rule %q: log group %x, expressions %v", o.Rules[i].Comment, group, names)
		}
		prefixes = append(prefixes, cstr(find(data[j], unix.NFTA_LOG_PREFIX)))
	}
	if !slices.Equal(prefixes, []string{plan.PrefixDrop, plan.PrefixAudit}) {
		t.Errorf("log prefixes %q", prefixes)
	}
}

// TestEncodingKeepsEveryElement: a large baseline's elements reach the
// kernel in messages whose element lists stay under netlink's 16-bit
// attribute length, and each key reads back as its element.
func TestEncodingKeepsEveryElement(t *testing.T) {
	var flows []store.Flow
	for i := range 20000 {
		ip := "10.1." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250+1)
		flows = append(flows, plantest.Flow(uint32(1000+i%7), plan.ProtoTCP, ip, uint16(1+i%3), 1, plantest.T0))
	}
	p := plan.Build(flows, plan.Options{Now: plantest.T0})
	want := map[string]bool{}
	for _, e := range p.Sets[0].Elements {
		want[e.Key()] = true
	}
	got := 0
	for _, m := range encode(t, p).of(unix.NFT_MSG_NEWSETELEM) {
		if set := cstr(find(m, unix.NFTA_SET_ELEM_LIST_SET)); set != plan.SetAllow4 && set != plan.SetAllow6 {
			continue
		}
		list := find(m, unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		if len(list) > 0xffff-4 {
			t.Fatalf("an element list of %d bytes", len(list))
		}
		for _, el := range attrsOf(list) {
			key := find(attrsOf(find(attrsOf(el.data), unix.NFTA_SET_ELEM_KEY)), unix.NFTA_DATA_VALUE)
			if e, ok := parseElementKey(key); !ok || !want[e.Key()] {
				t.Fatalf("element key %x", key)
			}
			got++
		}
	}
	if got != len(want) || got != 20000 {
		t.Errorf("%d elements sent, want %d", got, len(want))
	}
}

// TestRemoveTouchesOnlyOurTable: remove deletes our table, and with no
// table sends nothing.
func TestRemoveTouchesOnlyOurTable(t *testing.T) {
	w := &wire{}
	n := &Netlink{dial: w.dial}
	if removed, err := n.Remove("egress"); err != nil || removed || len(w.of(unix.NFT_MSG_DELTABLE)) != 0 {
		t.Errorf("remove with no table: %v %v, %d deletions", removed, err, len(w.of(unix.NFT_MSG_DELTABLE)))
	}
	w = &wire{table: "egress"}
	n = &Netlink{dial: w.dial}
	removed, err := n.Remove("egress")
	dels := w.of(unix.NFT_MSG_DELTABLE)
	if err != nil || !removed || len(dels) != 1 || cstr(find(dels[0], unix.NFTA_TABLE_NAME)) != "egress" {
		t.Errorf("remove: %v %v, deletions %v", removed, err, dels)
	}
}
