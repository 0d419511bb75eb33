//go:build linux

package enforce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Target is the network namespace to act in: "" for the caller's own, a
// name under /run/netns, or a path to a namespace file (/proc/PID/ns/net).
type Target struct {
	Netns string
}

// Path is the namespace file, or "" for the caller's own namespace.
func (t Target) Path() string {
	switch {
	case t.Netns == "":
		return ""
	case strings.Contains(t.Netns, "/"):
		return t.Netns
	}
	return "/run/netns/" + t.Netns
}

// String names the target for messages.
func (t Target) String() string {
	if t.Netns == "" {
		return "this host's network namespace"
	}
	return "network namespace " + t.Path()
}

// openNetns opens the target's namespace file: fd is -1 for the caller's
// own namespace.
func (t Target) openNetns() (fd int, closeFn func(), err error) {
	p := t.Path()
	if p == "" {
		return -1, func() {}, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return -1, nil, fmt.Errorf("open %s: %w", t, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		f.Close()
		return -1, nil, fmt.Errorf("open %s: not a network namespace file", t)
	}
	return int(f.Fd()), func() { f.Close() }, nil
}

// sockBuffer is the netlink socket buffer size: a 100,000-element batch is
// tens of megabytes, and the kernel answers it with one ack per message.
const sockBuffer = 64 << 20

// conn opens a netlink connection to nftables in the target namespace.
// Each operation uses a fresh connection: after an error a lasting one
// can hang on the next flush.
func (t Target) conn() (*nftables.Conn, func(), error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, sockBuffer); e != nil {
					serr = fmt.Errorf("raise netlink socket buffer: %w", e)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	})}
	fd, closeFn, err := t.openNetns()
	if err != nil {
		return nil, nil, err
	}
	if fd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		closeFn()
		return nil, nil, fmt.Errorf("open nftables netlink in %s: %w", t, err)
	}
	return c, closeFn, nil
}

func (p *Plan) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: p.Table}
}

func setKeyType(family int) nftables.SetDatatype {
	ip := nftables.TypeIPAddr
	if family == 6 {
		ip = nftables.TypeIP6Addr
	}
	return nftables.MustConcatSetType(nftables.TypeUID, ip, nftables.TypeInetProto, nftables.TypeInetService)
}

// elementKey encodes uid . ip . proto . port as the kernel stores it: each
// field padded to 4 bytes, the UID in host byte order, the rest in network
// byte order.
func elementKey(e Element) []byte {
	k := binaryutil.NativeEndian.PutUint32(e.UID)
	ip := e.IP.AsSlice()
	k = append(k, ip...)
	k = append(k, e.Proto, 0, 0, 0)
	k = binary.BigEndian.AppendUint16(k, e.Port)
	return append(k, 0, 0)
}

// parseElementKey undoes elementKey.
func parseElementKey(k []byte) (Element, bool) {
	var e Element
	switch len(k) {
	case 16:
		e.IP = netip.AddrFrom4([4]byte(k[4:8]))
	case 28:
		e.IP = netip.AddrFrom16([16]byte(k[4:20]))
	default:
		return e, false
	}
	n := len(k)
	e.UID = binaryutil.NativeEndian.Uint32(k[0:4])
	e.Proto = k[n-8]
	e.Port = binary.BigEndian.Uint16(k[n-4 : n-2])
	return e, true
}

// maxBatchAttr keeps each element message under the 16-bit netlink
// attribute length: larger lists wrap and the kernel answers ENOENT.
const maxBatchAttr = 48 << 10

// chunks cuts elements into lists whose encoding stays under maxBatchAttr.
func chunks(elems []nftables.SetElement) [][]nftables.SetElement {
	var out [][]nftables.SetElement
	start, size := 0, 0
	for i, e := range elems {
		sz := 48 + len(e.Key) + len(e.Comment)
		if size+sz > maxBatchAttr && i > start {
			out = append(out, elems[start:i])
			start, size = i, 0
		}
		size += sz
	}
	if start < len(elems) {
		out = append(out, elems[start:])
	}
	return out
}

func comment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

// queue adds the whole table to the connection's batch: create the table
// if missing, delete it, create it again with its contents. The kernel
// applies the batch as one transaction.
func (p *Plan) queue(c *nftables.Conn, carry map[string][]nftables.SetElement) error {
	t := p.table()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	sets := map[string]*nftables.Set{}
	for _, s := range p.Sets {
		ns := &nftables.Set{Table: t, Name: s.Name, KeyType: setKeyType(s.Family), Concatenation: true, Comment: s.Comment,
			Size: uint32(len(s.Elements))}
		if err := c.AddSet(ns, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		elems := make([]nftables.SetElement, len(s.Elements))
		for i, e := range s.Elements {
			elems[i] = nftables.SetElement{Key: elementKey(e), Comment: e.Comment}
		}
		for _, ch := range chunks(elems) {
			if err := c.SetAddElements(ns, ch); err != nil {
				return fmt.Errorf("add elements to set %s: %w", s.Name, err)
			}
		}
		sets[s.Name] = ns
	}
	for _, u := range p.UserSets {
		ns := &nftables.Set{Table: t, Name: u.Name, KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian}
		elems := make([]nftables.SetElement, len(u.UIDs))
		for i, uid := range u.UIDs {
			elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uid)}
		}
		if err := c.AddSet(ns, elems); err != nil {
			return fmt.Errorf("add set %s: %w", u.Name, err)
		}
		sets[u.Name] = ns
	}
	if p.Follow != nil {
		for _, fs := range []struct {
			name   string
			family int
		}{{SetFollow4, 4}, {SetFollow6, 6}} {
			ns := &nftables.Set{Table: t, Name: fs.name, KeyType: setKeyType(fs.family), Concatenation: true,
				HasTimeout: true, Timeout: p.Follow.TTLFloor, Size: FollowSetSize, Comment: "filled by the follower from DNS answers"}
			if err := c.AddSet(ns, nil); err != nil {
				return fmt.Errorf("add set %s: %w", fs.name, err)
			}
			for _, ch := range chunks(carry[fs.name]) {
				if err := c.SetAddElements(ns, ch); err != nil {
					return fmt.Errorf("carry elements of set %s: %w", fs.name, err)
				}
			}
			sets[fs.name] = ns
		}
		gate := &nftables.Set{Table: t, Name: SetFollowGate, KeyType: nftables.TypeCGroupV2, HasTimeout: true,
			Timeout: FollowGateTimeout, Comment: followGateComment}
		if err := c.AddSet(gate, carry[SetFollowGate]); err != nil {
			return fmt.Errorf("add set %s: %w", SetFollowGate, err)
		}
		sets[SetFollowGate] = gate
	}
	policy := nftables.ChainPolicyAccept
	if p.Chain.Policy == "drop" {
		policy = nftables.ChainPolicyDrop
	}
	ch := c.AddChain(&nftables.Chain{
		Name: p.Chain.Name, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	for i := range p.Rules {
		exprs, err := p.ruleExprs(c, t, sets, &p.Rules[i])
		if err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment(p.Rules[i].Comment)})
	}
	return nil
}

func nfproto(family int) []expr.Any {
	v := byte(unix.NFPROTO_IPV4)
	if family == 6 {
		v = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{v}},
	}
}

func l4proto(proto uint8) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func (p *Plan) ruleExprs(c *nftables.Conn, t *nftables.Table, sets map[string]*nftables.Set, r *Rule) ([]expr.Any, error) {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	switch r.Kind {
	case RuleEstablished:
		return []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			accept,
		}, nil
	case RuleLoopback:
		name := make([]byte, 16)
		copy(name, "lo")
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
			accept,
		}, nil
	case RuleICMPv6ND:
		anon := &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: nftables.TypeICMP6Type}
		var elems []nftables.SetElement
		for _, typ := range icmpv6ND {
			elems = append(elems, nftables.SetElement{Key: []byte{typ.typ}})
		}
		if err := c.AddSet(anon, elems); err != nil {
			return nil, fmt.Errorf("add icmpv6 type set: %w", err)
		}
		exprs := append(nfproto(6), l4proto(ProtoICMPv6)...)
		return append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Lookup{SourceRegister: 1, SetName: anon.Name, SetID: anon.ID},
			accept,
		), nil
	case RuleAllow:
		return allowExprs(c, t, r.Allow)
	case RuleLookup:
		s, ok := sets[r.Set]
		if !ok {
			return nil, fmt.Errorf("rule looks up missing set %s", r.Set)
		}
		addrOff, addrLen, protoReg, portReg := uint32(16), uint32(4), uint32(10), uint32(11)
		if r.Family == 6 {
			addrOff, addrLen, protoReg, portReg = 24, 16, 13, 14
		}
		exprs := nfproto(r.Family)
		return append(exprs,
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
			&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
			&expr.Counter{},
			accept,
		), nil
	case RuleDefault:
		who, err := usersExprs(sets, r.Set)
		if err != nil {
			return nil, err
		}
		switch {
		case p.DropLogRate == 0 && r.Action == "drop": // a plan from before drop_log_rate
			return append(who,
				&expr.Counter{},
				logExpr(PrefixDrop, p.nflogGroup()),
				&expr.Verdict{Kind: expr.VerdictDrop},
			), nil
		case p.DropLogRate == 0:
			return append(who, &expr.Counter{}, limitExpr(p.auditRate()), logExpr(PrefixAudit, p.nflogGroup())), nil
		case r.Action == "drop":
			return append(who, &expr.Counter{}, limitExpr(p.DropLogRate), &expr.Counter{}, logExpr(PrefixDrop, p.nflogGroup())), nil
		}
		return append(who, &expr.Counter{}, limitExpr(p.auditRate()), &expr.Counter{}, logExpr(PrefixAudit, p.nflogGroup())), nil
	case RuleDrop:
		who, err := usersExprs(sets, r.Set)
		if err != nil {
			return nil, err
		}
		return append(who, &expr.Verdict{Kind: expr.VerdictDrop}), nil
	case RuleAuditAccept:
		who, err := usersExprs(sets, r.Set)
		if err != nil {
			return nil, err
		}
		return append(who, accept), nil
	case RuleFollowMark:
		gate, ok := sets[r.Set]
		if !ok {
			return nil, fmt.Errorf("rule looks up missing set %s", r.Set)
		}
		m := binaryutil.NativeEndian.PutUint32(p.Follow.Mark)
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(r.Level), Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: gate.Name, SetID: gate.ID},
			&expr.Counter{},
			accept,
		}, nil
	}
	return nil, fmt.Errorf("unknown rule kind %q", r.Kind)
}

// limitExpr passes rate packets a second, with nft's default burst of 5.
func limitExpr(rate uint32) *expr.Limit {
	return &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(rate), Unit: expr.LimitTimeSecond, Burst: 5}
}

func logExpr(prefix string, group uint16) *expr.Log {
	return &expr.Log{
		Key:   1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX,
		Group: group,
		Data:  []byte(prefix),
	}
}

func allowExprs(c *nftables.Conn, t *nftables.Table, a *Allow) ([]expr.Any, error) {
	var exprs []expr.Any
	if a.UID != nil {
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(*a.UID)})
	}
	if len(a.Addrs) > 0 {
		family, off, n, typ := 4, uint32(16), uint32(4), nftables.TypeIPAddr
		if a.family() == 6 {
			family, off, n, typ = 6, 24, 16, nftables.TypeIP6Addr
		}
		anon := &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: typ}
		elems := make([]nftables.SetElement, len(a.Addrs))
		for i, ad := range a.Addrs {
			elems[i] = nftables.SetElement{Key: ad.AsSlice()}
		}
		if err := c.AddSet(anon, elems); err != nil {
			return nil, fmt.Errorf("add address set: %w", err)
		}
		exprs = append(exprs, nfproto(family)...)
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: 1, SetName: anon.Name, SetID: anon.ID})
	}
	if a.Dest.IsValid() {
		family, off := 4, uint32(16)
		if a.Dest.Addr().Is6() {
			family, off = 6, 24
		}
		exprs = append(exprs, nfproto(family)...)
		// As nft does: a byte-aligned prefix loads only its bytes; any
		// other loads the whole address and masks it.
		bits := a.Dest.Bits()
		n := bits / 8
		if bits%8 != 0 {
			n = a.Dest.Addr().BitLen() / 8
		}
		addr := a.Dest.Masked().Addr().AsSlice()[:n]
		exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(n)})
		if bits%8 != 0 {
			m := make([]byte, n)
			for i := range m {
				switch {
				case (i+1)*8 <= bits:
					m[i] = 0xff
				case i*8 < bits:
					m[i] = byte(0xff << (8 - bits%8))
				}
			}
			exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: m, Xor: make([]byte, n)})
		}
		exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
	}
	if a.Proto != 0 {
		exprs = append(exprs, l4proto(a.Proto)...)
	}
	if a.Port != 0 {
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, a.Port)})
	}
	return append(exprs, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}), nil
}

// usersExprs matches the socket's owner against a named set of UIDs;
// nothing for no set.
func usersExprs(sets map[string]*nftables.Set, name string) ([]expr.Any, error) {
	if name == "" {
		return nil, nil
	}
	s, ok := sets[name]
	if !ok {
		return nil, fmt.Errorf("rule matches missing set %s", name)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}, nil
}

// ApplyResult says what an apply did.
type ApplyResult struct {
	Elements int           `json:"elements"`
	Rules    int           `json:"rules"`
	Took     time.Duration `json:"took_ns"`
	// Verified: the table, chain, policy, rules and set sizes read back
	// match. Set sizes are counted in the kernel up to 10,000 elements;
	// above, they are the sizes the acknowledged transaction wrote.
	Verified bool `json:"verified"`
}

// ErrRejected wraps a batch the kernel refused; the previous table, if
// any, is untouched.
var ErrRejected = errors.New("the kernel rejected the new table; the previous table (if any) is unchanged")

// Apply replaces our table in the target namespace with the plan, in one
// netlink transaction, then reads it back to verify.
func Apply(p *Plan, t Target) (*ApplyResult, error) {
	start := time.Now()
	var carry map[string][]nftables.SetElement
	if p.Follow != nil {
		var err error
		if carry, err = followedElements(t, p.Table); err != nil {
			return nil, err
		}
	}
	c, done, err := t.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	if err := p.queue(c, carry); err != nil {
		return nil, fmt.Errorf("build netlink batch: %w", err)
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("apply table inet %s in %s: %w: %w", p.Table, t, ErrRejected, err)
	}
	res := &ApplyResult{Took: time.Since(start)}
	for _, s := range p.Sets {
		res.Elements += len(s.Elements)
	}
	res.Rules = len(p.Rules)
	st, err := ReadStatus(t, p.Table, res.Elements <= verifyCountLimit)
	if err != nil {
		return res, fmt.Errorf("verify table inet %s: %w", p.Table, err)
	}
	if err := st.matches(p); err != nil {
		return res, fmt.Errorf("verify table inet %s in %s: %w", p.Table, t, err)
	}
	res.Verified = true
	return res, nil
}

// ourTable looks up our table: nil, and no error, when it is not there.
func ourTable(c *nftables.Conn, t Target, table string) (*nftables.Table, error) {
	tab, err := c.ListTableOfFamily(table, nftables.TableFamilyINet)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table inet %s in %s: %w", table, t, err)
	}
	return tab, nil
}

// followedElements reads the live elements of the follow sets, with the
// time each has left, so a replace carries them over: followed addresses
// do not vanish because a new generation was applied.
func followedElements(t Target, table string) (map[string][]nftables.SetElement, error) {
	c, done, err := t.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	tab, err := ourTable(c, t, table)
	if tab == nil || err != nil {
		return nil, err
	}
	out := map[string][]nftables.SetElement{}
	for _, name := range []string{SetFollow4, SetFollow6, SetFollowGate} {
		s, err := c.GetSetByName(tab, name)
		if err != nil {
			continue // the current table follows nothing
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", name, err)
		}
		for _, e := range elems {
			if e.Expires < time.Second {
				continue
			}
			out[name] = append(out[name], nftables.SetElement{Key: e.Key, Timeout: e.Expires})
		}
	}
	return out, nil
}

// Remove deletes our table; it reports whether there was one.
func Remove(t Target, table string) (bool, error) {
	c, done, err := t.conn()
	if err != nil {
		return false, err
	}
	defer done()
	if tab, err := ourTable(c, t, table); tab == nil || err != nil {
		return false, err
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("delete table inet %s in %s: %w", table, t, err)
	}
	return true, nil
}
