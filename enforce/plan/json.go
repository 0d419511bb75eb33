package plan

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// JSON encodes the plan as json.Marshal does, byte for byte, several times
// faster on a large plan: the set elements and the name rules, nearly all
// of its bytes, are written here; encoding/json writes the rest. The tests
// compare the two encodings.
func (p *Plan) JSON() ([]byte, error) {
	o := jsonOut{}
	if err := p.encodeJSON(&o); err != nil {
		return nil, err
	}
	return o.b, nil
}

// JSONPieces encodes the plan as JSON does, byte for byte, and hands it
// to put in pieces, in order: a piece ends at an element's or a name
// rule's end once it holds at least piece bytes, and the last one ends
// the plan. put gives back the buffer to go on with (appended from its
// start; it may be the one put was given, once put is done with it). The
// plan is never whole in memory: a 100,000-element plan's 27 MB go
// through a few buffers of piece bytes instead of fresh pages.
func (p *Plan) JSONPieces(piece int, put func([]byte) []byte) error {
	o := jsonOut{piece: max(piece, 1), put: put}
	if err := p.encodeJSON(&o); err != nil {
		return err
	}
	if len(o.b) > 0 {
		put(o.b)
	}
	return nil
}

// jsonOut is where encodeJSON writes: b, handed to put (when there is
// one) whenever it holds piece bytes at the end of an element or a rule.
type jsonOut struct {
	b     []byte
	piece int
	put   func([]byte) []byte
}

// more hands b to put when it holds a piece.
func (o *jsonOut) more() {
	if o.put != nil && len(o.b) >= o.piece {
		o.b = o.put(o.b)[:0]
	}
}

func (p *Plan) encodeJSON(o *jsonOut) error {
	head, err := json.Marshal(head(p))
	if err != nil {
		return err
	}
	if o.put == nil {
		o.b = make([]byte, 0, p.jsonSize(len(head)))
	} else {
		o.b = o.put(nil)[:0]
	}
	// Each set's "elements":null (a key: no string holds an unescaped
	// quote), then the follow spec's "rules":null.
	const elemsNull, rulesNull = `"elements":null`, `"follow":{"rules":null`
	if bytes.Count(head, []byte(elemsNull)) != len(p.Sets) || (p.Follow != nil) != bytes.Contains(head, []byte(rulesNull)) {
		data, err := json.Marshal(p)
		o.b = append(o.b, data...)
		return err
	}
	rest := head
	for _, s := range p.Sets {
		i := bytes.Index(rest, []byte(elemsNull))
		o.b = append(o.b, rest[:i]...)
		o.b = append(o.b, `"elements":`...)
		o.elements(s.Elements)
		rest = rest[i+len(elemsNull):]
	}
	if p.Follow != nil {
		i := bytes.Index(rest, []byte(rulesNull))
		o.b = append(o.b, rest[:i]...)
		o.b = append(o.b, `"follow":{"rules":`...)
		o.nameRules(p.Follow.Rules)
		rest = rest[i+len(rulesNull):]
	}
	o.b = append(o.b, rest...)
	return nil
}

// elements writes elements as encoding/json writes a []Element.
func (o *jsonOut) elements(elems []Element) {
	if elems == nil {
		o.b = append(o.b, "null"...)
		return
	}
	o.b = append(o.b, '[')
	var ip []byte
	for i := range elems {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b, ip = appendElement(o.b, &elems[i], ip)
		o.more()
	}
	o.b = append(o.b, ']')
}

// appendElement writes e as encoding/json writes an Element (ip: a
// buffer for its address, given back).
func appendElement(b []byte, e *Element, ip []byte) ([]byte, []byte) {
	b = append(b, '{')
	if e.Service != "" {
		b = append(b, `"service":`...)
		b = append(appendJSONString(b, e.Service), ',')
	}
	if e.AnyUser {
		b = append(b, `"any_user":true,`...)
	}
	b = append(b, `"uid":`...)
	b = strconv.AppendUint(b, uint64(e.UID), 10)
	if e.User != "" {
		b = append(b, `,"user":`...)
		b = appendJSONString(b, e.User)
	}
	b = append(b, `,"ip":`...)
	ip = ip[:0]
	if e.IP.IsValid() { // MarshalText: the zero address is ""
		ip = e.IP.AppendTo(ip)
	}
	b = appendJSONString(b, ip)
	b = append(b, `,"proto":`...)
	b = strconv.AppendUint(b, uint64(e.Proto), 10)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(e.Port), 10)
	b = append(b, `,"comment":`...)
	b = appendJSONString(b, e.Comment)
	b = appendStrings(b, `,"hosts":`, e.Hosts)
	b = appendStrings(b, `,"names":`, e.Names)
	return append(b, '}'), ip
}

// appendStrings writes key and list as encoding/json writes an omitempty
// []string field: nothing when list is empty.
func appendStrings(b []byte, key string, list []string) []byte {
	if len(list) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for j, s := range list {
		if j > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// nameRules writes rules as encoding/json writes a []NameRule.
func (o *jsonOut) nameRules(rules []NameRule) {
	if rules == nil {
		o.b = append(o.b, "null"...)
		return
	}
	o.b = append(o.b, '[')
	for i := range rules {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = appendNameRule(o.b, &rules[i])
		o.more()
	}
	o.b = append(o.b, ']')
}

// appendNameRule writes r as encoding/json writes a NameRule.
func appendNameRule(b []byte, r *NameRule) []byte {
	b = append(b, `{"uid":`...)
	b = strconv.AppendUint(b, uint64(r.UID), 10)
	if r.User != "" {
		b = append(b, `,"user":`...)
		b = appendJSONString(b, r.User)
	}
	b = append(b, `,"name":`...)
	b = appendJSONString(b, r.Name)
	b = append(b, `,"proto":`...)
	b = strconv.AppendUint(b, uint64(r.Proto), 10)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(r.Port), 10)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, r.Source)
	return append(b, '}')
}

// appendJSONString writes s as encoding/json does: as it is when it has
// only printable ASCII that needs no escape; anything else goes through
// encoding/json itself.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(string(s)) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
