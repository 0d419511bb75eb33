//go:build linux

package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
)

// The plan as netlink objects: the same table the nft text describes,
// checked by the tests that load both and compare nft's listings.

func tableOf(name string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
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
func elementKey(e plan.Element) []byte { return appendElementKey(make([]byte, 0, 28), &e) }

// appendElementKey appends e's key (elementKey) to k; the batch writer
// writes it in place with it.
func appendElementKey(k []byte, e *plan.Element) []byte {
	k = binary.NativeEndian.AppendUint32(k, e.UID)
	switch {
	case e.IP.Is4():
		a := e.IP.As4()
		k = append(k, a[:]...)
	case e.IP.Is6():
		a := e.IP.As16()
		k = append(k, a[:]...)
	}
	k = append(k, e.Proto, 0, 0, 0)
	k = binary.BigEndian.AppendUint16(k, e.Port)
	return append(k, 0, 0)
}

// parseElementKey undoes elementKey.
func parseElementKey(k []byte) (plan.Element, bool) {
	var e plan.Element
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

// encoder queues one plan's table on a connection.
type encoder struct {
	c     *nftables.Conn
	p     *plan.Plan
	t     *nftables.Table
	sets  map[string]*nftables.Set
	ids   map[string]uint64 // the services' cgroup ids (CgroupIDs.Resolve)
	stamp Stamp
	// bulk, when set, takes the named sets' elements: c then only
	// collects the rest of the table for it (queueBatch).
	bulk *batchWriter
}

// queue adds the whole table to the connection's batch: create the table
// if missing, delete it, create it again with its contents. The kernel
// applies the batch as one transaction. carry holds the live elements of
// the follow sets, which the new table keeps.
func queue(c *nftables.Conn, p *plan.Plan, ids map[string]uint64, carry map[string][]nftables.SetElement, stamp Stamp) error {
	en := &encoder{c: c, p: p, t: tableOf(p.Table), sets: map[string]*nftables.Set{}, ids: ids, stamp: stamp}
	return en.table(carry)
}

// queueBatch writes the whole table into batch writer w, as queue would
// send it: google/nftables encodes all but the named sets' elements.
func queueBatch(w *batchWriter, p *plan.Plan, ids map[string]uint64, carry map[string][]nftables.SetElement, stamp Stamp) error {
	c, err := nftables.New(nftables.WithTestDial(w.capture))
	if err != nil {
		return err
	}
	en := &encoder{c: c, p: p, t: tableOf(p.Table), sets: map[string]*nftables.Set{}, ids: ids, stamp: stamp, bulk: w}
	if err := en.table(carry); err != nil {
		return err
	}
	return c.Flush()
}

// table queues the whole table: see queue.
func (en *encoder) table(carry map[string][]nftables.SetElement) error {
	c, p := en.c, en.p
	c.AddTable(en.t)
	c.DelTable(en.t)
	c.AddTable(en.t)
	if err := en.allowSets(); err != nil {
		return err
	}
	if err := en.userSets(); err != nil {
		return err
	}
	if err := en.serviceStageSets(); err != nil {
		return err
	}
	if p.Follow != nil {
		if err := en.followSets(carry); err != nil {
			return err
		}
	}
	return en.chain()
}

// addSet adds a named set with its elements, in chunks the kernel takes.
func (en *encoder) addSet(s *nftables.Set, elems []nftables.SetElement, what string) error {
	if en.bulk != nil {
		src := libElems{elems: elems, hasTimeout: s.HasTimeout}
		if err := src.check(); err != nil {
			return fmt.Errorf("%s set %s: %w", what, s.Name, err)
		}
		return en.addSetBulk(s, src)
	}
	if err := en.c.AddSet(s, nil); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	for _, ch := range chunks(elems) {
		if err := en.c.SetAddElements(s, ch); err != nil {
			return fmt.Errorf("%s set %s: %w", what, s.Name, err)
		}
	}
	en.sets[s.Name] = s
	return nil
}

// addSetBulk adds a named set and hands its elements to the batch writer,
// after the messages queued so far.
func (en *encoder) addSetBulk(s *nftables.Set, src elemSource) error {
	if err := en.c.AddSet(s, nil); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	if err := en.c.Flush(); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	en.bulk.elements(s, src)
	en.sets[s.Name] = s
	return nil
}

func (en *encoder) allowSets() error {
	for _, s := range en.p.Sets {
		if plan.IsServiceSet(s.Name) {
			if err := en.serviceSet(s); err != nil {
				return err
			}
			continue
		}
		ns := &nftables.Set{Table: en.t, Name: s.Name, KeyType: setKeyType(s.Family), Concatenation: true, Comment: s.Comment,
			Size: uint32(s.Size())}
		if en.bulk != nil {
			if err := en.addSetBulk(ns, planElems(s.Elements)); err != nil {
				return err
			}
			continue
		}
		elems := make([]nftables.SetElement, len(s.Elements))
		for i, e := range s.Elements {
			elems[i] = nftables.SetElement{Key: elementKey(e), Comment: e.Comment}
		}
		if err := en.addSet(ns, elems, "add elements to"); err != nil {
			return err
		}
	}
	return nil
}

func (en *encoder) userSets() error {
	for _, u := range en.p.UserSets {
		ns := &nftables.Set{Table: en.t, Name: u.Name, KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian}
		elems := make([]nftables.SetElement, len(u.UIDs))
		for i, uid := range u.UIDs {
			elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uid)}
		}
		if err := en.c.AddSet(ns, elems); err != nil {
			return fmt.Errorf("add set %s: %w", u.Name, err)
		}
		en.sets[u.Name] = ns
	}
	return nil
}

// followSets adds the timeout sets the follower fills, and its gate.
func (en *encoder) followSets(carry map[string][]nftables.SetElement) error {
	for _, fs := range []struct {
		name   string
		family int
	}{{plan.SetFollow4, 4}, {plan.SetFollow6, 6}} {
		ns := &nftables.Set{Table: en.t, Name: fs.name, KeyType: setKeyType(fs.family), Concatenation: true,
			HasTimeout: true, Timeout: en.p.Follow.TTLFloor, Size: plan.FollowSetSize, Comment: "filled by the follower from DNS answers"}
		if err := en.addSet(ns, carry[fs.name], "carry elements of"); err != nil {
			return err
		}
	}
	gate := &nftables.Set{Table: en.t, Name: plan.SetFollowGate, KeyType: nftables.TypeCGroupV2, HasTimeout: true,
		Timeout: plan.FollowGateTimeout, Comment: plan.FollowGateComment}
	if err := en.c.AddSet(gate, carry[plan.SetFollowGate]); err != nil {
		return fmt.Errorf("add set %s: %w", plan.SetFollowGate, err)
	}
	en.sets[plan.SetFollowGate] = gate
	return nil
}

// outputChain is the plan's chain (AddChain creates it, or changes the
// policy of the one there).
func (en *encoder) outputChain() *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	if en.p.Chain.Policy == "drop" {
		policy = nftables.ChainPolicyDrop
	}
	return &nftables.Chain{
		Name: en.p.Chain.Name, Table: en.t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	}
}

func (en *encoder) chain() error {
	ch := en.c.AddChain(en.outputChain())
	for i := range en.p.Rules {
		r, err := en.rule(ch, i)
		if err != nil {
			return err
		}
		en.c.AddRule(r)
	}
	return nil
}

// rule is rule i of the plan, in chain ch: the first one carries the
// table's stamp beside its comment.
func (en *encoder) rule(ch *nftables.Chain, i int) (*nftables.Rule, error) {
	exprs, err := en.ruleExprs(&en.p.Rules[i])
	if err != nil {
		return nil, err
	}
	r := &en.p.Rules[i]
	udata := userdata.AppendString(comment(r.Comment), ruleTagType, ruleTag(r.Comment, r.Text))
	if i == 0 {
		udata = appendStamp(udata, en.stamp)
	}
	return &nftables.Rule{Table: en.t, Chain: ch, Exprs: exprs, UserData: udata}, nil
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

func accept() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictAccept} }

func drop() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictDrop} }

// ruleExprs is a rule of the plan as expressions; each kind encodes one
// way, as its nft text (plan.Rule.Text) reads.
func (en *encoder) ruleExprs(r *plan.Rule) ([]expr.Any, error) {
	switch r.Kind {
	case plan.RuleEstablished:
		return []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			accept(),
		}, nil
	case plan.RuleLoopback:
		name := make([]byte, 16)
		copy(name, "lo")
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name}, accept()}, nil
	case plan.RuleICMPv6ND:
		return en.icmpv6ND()
	case plan.RuleAllow:
		return en.allowExprs(r.Allow)
	case plan.RuleLookup:
		return en.lookupExprs(r)
	case plan.RuleServiceLookup:
		return en.serviceLookupExprs(r)
	case plan.RuleDefault:
		return en.defaultExprs(r)
	case plan.RuleDrop, plan.RuleAuditAccept:
		who, err := en.who(r)
		if err != nil {
			return nil, err
		}
		if r.Kind == plan.RuleDrop {
			return append(who, drop()), nil
		}
		return append(who, accept()), nil
	case plan.RuleFollowMark:
		return en.followMarkExprs(r)
	}
	return nil, fmt.Errorf("unknown rule kind %q", r.Kind)
}

func (en *encoder) icmpv6ND() ([]expr.Any, error) {
	anon := &nftables.Set{Table: en.t, Anonymous: true, Constant: true, KeyType: nftables.TypeICMP6Type}
	var elems []nftables.SetElement
	for _, typ := range plan.ICMPv6ND {
		elems = append(elems, nftables.SetElement{Key: []byte{typ.Type}})
	}
	if err := en.c.AddSet(anon, elems); err != nil {
		return nil, fmt.Errorf("add icmpv6 type set: %w", err)
	}
	exprs := append(nfproto(6), l4proto(plan.ProtoICMPv6)...)
	return append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Lookup{SourceRegister: 1, SetName: anon.Name, SetID: anon.ID},
		accept(),
	), nil
}

// set is a named set of the table; a rule that looks up another is an
// error.
func (en *encoder) set(name string) (*nftables.Set, error) {
	s, ok := en.sets[name]
	if !ok {
		return nil, fmt.Errorf("rule looks up missing set %s", name)
	}
	return s, nil
}

// lookupExprs look the packet's uid . daddr . l4proto . dport up in a
// concatenated set: each field in consecutive registers.
func (en *encoder) lookupExprs(r *plan.Rule) ([]expr.Any, error) {
	s, err := en.set(r.Set)
	if err != nil {
		return nil, err
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
		accept(),
	), nil
}

// defaultExprs count, limit and log what the allow-list did not accept.
// The first counter sees every packet, the second the packets the limit
// lets through to the log.
func (en *encoder) defaultExprs(r *plan.Rule) ([]expr.Any, error) {
	who, err := en.who(r)
	if err != nil {
		return nil, err
	}
	p := en.p
	switch {
	case p.DropLogRate == 0 && r.Action == "drop": // a plan from before drop_log_rate
		return append(who, &expr.Counter{}, logExpr(plan.PrefixDrop, p.LogGroup()), drop()), nil
	case p.DropLogRate == 0:
		return append(who, &expr.Counter{}, limitExpr(p.AuditRate()), logExpr(plan.PrefixAudit, p.LogGroup())), nil
	case r.Action == "drop":
		return append(who, &expr.Counter{}, limitExpr(p.DropLogRate), &expr.Counter{}, logExpr(plan.PrefixDrop, p.LogGroup())), nil
	}
	return append(who, &expr.Counter{}, limitExpr(p.AuditRate()), &expr.Counter{}, logExpr(plan.PrefixAudit, p.LogGroup())), nil
}

// followMarkExprs accept a packet with the follow mark from a socket whose
// cgroup at the rule's level is in the gate.
func (en *encoder) followMarkExprs(r *plan.Rule) ([]expr.Any, error) {
	gate, err := en.set(r.Set)
	if err != nil {
		return nil, err
	}
	m := binaryutil.NativeEndian.PutUint32(en.p.Follow.Mark)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
		&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(r.Level), Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: gate.Name, SetID: gate.ID},
		&expr.Counter{},
		accept(),
	}, nil
}

// limitExpr passes rate packets a second, with nft's default burst of 5.
func limitExpr(rate uint32) *expr.Limit {
	return &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(rate), Unit: expr.LimitTimeSecond, Burst: 5}
}

// logExpr logs to an NFLOG group with a prefix. Key is the bitmask of
// the attributes present: without it, group and prefix are dropped.
func logExpr(prefix string, group uint16) *expr.Log {
	return &expr.Log{
		Key:   1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX,
		Group: group,
		Data:  []byte(prefix),
	}
}

func (en *encoder) allowExprs(a *plan.Allow) ([]expr.Any, error) {
	var exprs []expr.Any
	if a.UID != nil {
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(*a.UID)})
	}
	if len(a.Addrs) > 0 {
		addrs, err := en.addrSetExprs(a)
		if err != nil {
			return nil, err
		}
		exprs = append(exprs, addrs...)
	}
	if a.Dest.IsValid() {
		exprs = append(exprs, prefixExprs(a.Dest)...)
	}
	if a.Proto != 0 {
		exprs = append(exprs, l4proto(a.Proto)...)
	}
	if a.Port != 0 {
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, a.Port)})
	}
	return append(exprs, &expr.Counter{}, accept()), nil
}

// addrSetExprs match the destination against an anonymous set of the
// allow's addresses (one family).
func (en *encoder) addrSetExprs(a *plan.Allow) ([]expr.Any, error) {
	family, off, n, typ := 4, uint32(16), uint32(4), nftables.TypeIPAddr
	if a.Family() == 6 {
		family, off, n, typ = 6, 24, 16, nftables.TypeIP6Addr
	}
	anon := &nftables.Set{Table: en.t, Anonymous: true, Constant: true, KeyType: typ}
	elems := make([]nftables.SetElement, len(a.Addrs))
	for i, ad := range a.Addrs {
		elems[i] = nftables.SetElement{Key: ad.AsSlice()}
	}
	if err := en.c.AddSet(anon, elems); err != nil {
		return nil, fmt.Errorf("add address set: %w", err)
	}
	return append(nfproto(family),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: anon.Name, SetID: anon.ID}), nil
}

// prefixExprs match the destination against a prefix. As nft does: a
// byte-aligned prefix loads only its bytes; any other loads the whole
// address and masks it.
func prefixExprs(dest netip.Prefix) []expr.Any {
	family, off := 4, uint32(16)
	if dest.Addr().Is6() {
		family, off = 6, 24
	}
	exprs := nfproto(family)
	bits := dest.Bits()
	n := bits / 8
	if bits%8 != 0 {
		n = dest.Addr().BitLen() / 8
	}
	addr := dest.Masked().Addr().AsSlice()[:n]
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
	return append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
}

// users matches the socket's owner against a named set of UIDs; nothing
// for no set.
func (en *encoder) users(name string) ([]expr.Any, error) {
	if name == "" {
		return nil, nil
	}
	s, ok := en.sets[name]
	if !ok {
		return nil, fmt.Errorf("rule matches missing set %s", name)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}, nil
}
