//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// batchCase is a plan and what replace gives the encoder with it: the
// services' cgroup ids and the follow sets' live elements.
type batchCase struct {
	name  string
	p     *plan.Plan
	ids   map[string]uint64
	carry map[string][]nftables.SetElement
}

// batchCases cover every kind of element the table holds: IPv4 and IPv6
// keys with and without comments, in sets of many messages, per-user
// sets, per-service keys (cgroup ids), and the follow sets' elements
// with timeouts.
func batchCases() []batchCase {
	var out []batchCase
	for _, c := range plantest.GoldenCases {
		out = append(out, batchCase{name: c.Name, p: c.Plan()})
	}
	fol := out[len(out)-1]
	fol.name = "follow with live elements"
	k4 := elementKey(plan.Element{UID: 65534, IP: netip.MustParseAddr("192.0.2.9"), Proto: plan.ProtoTCP, Port: 443})
	k6 := elementKey(plan.Element{UID: 0, IP: netip.MustParseAddr("2001:db8::9"), Proto: plan.ProtoUDP, Port: 53})
	fol.carry = map[string][]nftables.SetElement{
		plan.SetFollow4:    {{Key: k4, Timeout: 7 * time.Minute}},
		plan.SetFollow6:    {{Key: k6, Timeout: 9 * time.Minute}},
		plan.SetFollowGate: {{Key: binary.NativeEndian.AppendUint64(nil, 4242), Timeout: time.Hour}},
	}
	out = append(out, fol, batchCase{name: "5000 flows", p: plan.Build(manyFlows(5000), plan.Options{Now: plantest.T0})})
	svc := plan.Build(serviceFlows(), plan.Options{Now: plantest.T0, Match: plan.MatchUserService, CgroupRoot: "unified"})
	ids := map[string]uint64{}
	for _, s := range svc.Sets {
		for _, e := range s.Elements {
			if e.Service != "" {
				ids[e.Service] = 1000 + uint64(len(ids))
			}
		}
	}
	return append(out, batchCase{name: "services", p: svc, ids: ids})
}

// manyFlows are n flows over IPv4 and IPv6, users, protocols and ports,
// some named (their elements carry comments).
func manyFlows(n int) []store.Flow {
	var flows []store.Flow
	for i := range n {
		ip := "10.9." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250+1)
		if i%3 == 0 {
			ip = fmt.Sprintf("2001:db8:%x::%x", i/1000, i%1000+1)
		}
		proto := plan.ProtoTCP
		if i%4 == 1 {
			proto = plan.ProtoUDP
		}
		var names []string
		if i%2 == 0 {
			names = []string{"host" + strconv.Itoa(i) + ".example.org"}
		}
		flows = append(flows, plantest.Flow(uint32(1000+i%5), proto, ip, uint16(1+i%700), 1, plantest.T0, names...))
	}
	return flows
}

func serviceFlows() []store.Flow {
	var flows []store.Flow
	for i, cg := range []string{"/system.slice/a.service", "/system.slice/b.service", "/user.slice/x.scope"} {
		for j := range 3 {
			f := plantest.Flow(uint32(i), plan.ProtoTCP, "192.0.2."+strconv.Itoa(10*i+j+1), 443, 1, plantest.T0, "svc.example")
			if j == 2 {
				f = plantest.Flow(uint32(i), plan.ProtoUDP, "2001:db8::"+strconv.Itoa(10*i+j+1), 53, 1, plantest.T0)
			}
			f.Cgroups = []string{cg}
			flows = append(flows, f)
		}
	}
	return flows
}

// writeBatch writes case c's table with the batch writer.
func writeBatch(t *testing.T, c batchCase, stamp Stamp) *batchWriter {
	t.Helper()
	w := newBatchWriter()
	t.Cleanup(w.release)
	if err := queueBatch(w, c.p, c.ids, c.carry, stamp); err != nil {
		t.Fatal(err)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	w.buffers()
	return w
}

// messages parses the batch back into messages.
func (w *batchWriter) messages(t *testing.T) []netlink.Message {
	t.Helper()
	var out []netlink.Message
	for _, b := range w.bufs {
		for len(b) > 0 {
			l := int(binary.NativeEndian.Uint32(b))
			var m netlink.Message
			if err := m.UnmarshalBinary(b[:align4(l)]); err != nil {
				t.Fatalf("message %d: %v", len(out)+1, err)
			}
			out = append(out, m)
			b = b[align4(l):]
		}
	}
	return out
}

// TestBatchBytesAsLibrary: the batch writer sends the messages
// google/nftables sends for the same table, in the same order, the
// element messages byte for byte (but for the set's transaction id,
// which google/nftables numbers process-wide).
func TestBatchBytesAsLibrary(t *testing.T) {
	for _, c := range batchCases() {
		t.Run(c.name, func(t *testing.T) {
			lib := &wire{}
			conn, err := nftables.New(nftables.WithTestDial(lib.dial))
			if err != nil {
				t.Fatal(err)
			}
			if err := queue(conn, c.p, c.ids, c.carry, Stamp{Generation: 3}); err != nil {
				t.Fatal(err)
			}
			if err := conn.Flush(); err != nil {
				t.Fatal(err)
			}
			ours := writeBatch(t, c, Stamp{Generation: 3}).messages(t)
			if len(ours) != len(lib.sent) {
				t.Fatalf("%d messages, google/nftables sends %d", len(ours), len(lib.sent))
			}
			elems := 0
			for i, m := range ours {
				want := lib.sent[i]
				if m.Header.Type != want.Header.Type || m.Header.Flags != want.Header.Flags || len(m.Data) != len(want.Data) {
					t.Fatalf("message %d: %v, %d bytes; google/nftables %v, %d bytes", i+1, m.Header, len(m.Data), want.Header, len(want.Data))
				}
				if msgType(m) != unix.NFT_MSG_NEWSETELEM || m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES {
					continue
				}
				elems++
				got, exp := attrsOf(m.Data[4:]), attrsOf(want.Data[4:])
				if string(m.Data[:4]) != string(want.Data[:4]) || len(got) != len(exp) {
					t.Fatalf("message %d: %x, google/nftables %x", i+1, m.Data, want.Data)
				}
				for j := range got {
					if got[j].typ != exp[j].typ || got[j].typ != unix.NFTA_SET_ELEM_LIST_SET_ID && string(got[j].data) != string(exp[j].data) {
						t.Fatalf("message %d attribute %d: %x, google/nftables %x", i+1, got[j].typ, got[j].data, exp[j].data)
					}
				}
			}
			if elems == 0 {
				t.Error("no element message")
			}
		})
	}
}

// listingNoExpiry is the table's listing without the time its timed
// elements have left.
func listingNoExpiry(t *testing.T, ns *lab.Netns) string {
	return regexp.MustCompile(` expires [0-9hms.]+`).ReplaceAllString(lab.ListTable(t, ns, "egress"), "")
}

// TestBatchGivesTheLibrarysTable: in the kernel, the table the batch
// writer sends is the one google/nftables sends, for every kind of
// element.
func TestBatchGivesTheLibrarysTable(t *testing.T) {
	lab.Require(t, "nft")
	for _, c := range batchCases() {
		t.Run(c.name, func(t *testing.T) {
			byLib, byBatch := lab.NewNetns(t), lab.NewNetns(t)
			lib := &Netlink{t: Target{Netns: byLib.Name}, viaLibrary: true}
			if err := lib.sendTable(c.p, c.ids, c.carry, Stamp{Generation: 5}); err != nil {
				t.Fatal(err)
			}
			if err := Open(Target{Netns: byBatch.Name}).sendTable(c.p, c.ids, c.carry, Stamp{Generation: 5}); err != nil {
				t.Fatal(err)
			}
			a, b := listingNoExpiry(t, byLib), listingNoExpiry(t, byBatch)
			if a != b {
				t.Errorf("listings differ\n--- google/nftables:\n%s\n--- batch writer:\n%s", a, b)
			}
			if c.carry != nil && !strings.Contains(b, "timeout 7m") {
				t.Errorf("the live follow element lost its timeout:\n%s", b)
			}
		})
	}
}

// TestBatchWithAFailingMessageChangesNothing: one element the kernel
// refuses, in the middle of a set sent in many messages, fails the whole
// apply: the error names the message and the set, and the table is the
// previous one, element for element.
func TestBatchWithAFailingMessageChangesNothing(t *testing.T) {
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	n := Open(Target{Netns: ns.Name})
	old := plan.Build(manyFlows(3000), plan.Options{Now: plantest.T0})
	if _, err := n.ApplyWith(old, ApplyOptions{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	before := lab.ListTable(t, ns, "egress")
	bad := plan.Build(manyFlows(4000), plan.Options{Now: plantest.T0, Mode: plan.ModeEnforce})
	elems := bad.Sets[0].Elements
	mid := len(elems) / 2
	// An element without an address: its key is too short for the set.
	bad.Sets[0].Elements = append(elems[:mid:mid], append([]plan.Element{{UID: 1, Proto: plan.ProtoTCP, Port: 1}}, elems[mid:]...)...)
	_, err := n.ApplyWith(bad, ApplyOptions{Generation: 2})
	if !errors.Is(err, ErrRejected) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("apply with a bad element: %v, want ErrRejected and EINVAL", err)
	}
	m := regexp.MustCompile(`add elements (\d+)-(\d+) to set ` + bad.Sets[0].Name + `: `).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error does not name the message: %v", err)
	}
	if first, last := atoiT(t, m[1]), atoiT(t, m[2]); first > mid+1 || last < mid+1 || first == 1 {
		t.Errorf("the error names elements %d-%d, the bad one is %d: %v", first, last, mid+1, err)
	}
	t.Logf("the error: %v", err)
	if strings.Count(err.Error(), "add elements") != 1 {
		t.Errorf("more than one failed message reported: %v", err)
	}
	if after := lab.ListTable(t, ns, "egress"); after != before {
		t.Errorf("the table changed after a failed apply")
	}
	st, err := n.Status("egress", false)
	if err != nil || st.stamp == nil || st.stamp.Generation != 1 {
		t.Errorf("after a failed apply: stamp %+v, %v", st, err)
	}
}

func atoiT(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
