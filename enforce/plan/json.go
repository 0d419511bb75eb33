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
	head, err := json.Marshal(head(p))
	if err != nil {
		return nil, err
	}
	// Each set's "elements":null (a key: no string holds an unescaped
	// quote), then the follow spec's "rules":null.
	const elemsNull, rulesNull = `"elements":null`, `"follow":{"rules":null`
	if bytes.Count(head, []byte(elemsNull)) != len(p.Sets) || (p.Follow != nil) != bytes.Contains(head, []byte(rulesNull)) {
		return json.Marshal(p)
	}
	out := make([]byte, 0, p.jsonSize(len(head)))
	rest := head
	for _, s := range p.Sets {
		i := bytes.Index(rest, []byte(elemsNull))
		out = append(out, rest[:i]...)
		out = append(out, `"elements":`...)
		out = appendElements(out, s.Elements)
		rest = rest[i+len(elemsNull):]
	}
	if p.Follow != nil {
		i := bytes.Index(rest, []byte(rulesNull))
		out = append(out, rest[:i]...)
		out = append(out, `"follow":{"rules":`...)
		out = appendNameRules(out, p.Follow.Rules)
		rest = rest[i+len(rulesNull):]
	}
	return append(out, rest...), nil
}

// appendElements writes elements as encoding/json writes a []Element.
func appendElements(b []byte, elems []Element) []byte {
	if elems == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	var ip []byte
	for i := range elems {
		if i > 0 {
			b = append(b, ',')
		}
		e := &elems[i]
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
		b = append(b, '}')
	}
	return append(b, ']')
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

// appendNameRules writes rules as encoding/json writes a []NameRule.
func appendNameRules(b []byte, rules []NameRule) []byte {
	if rules == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range rules {
		if i > 0 {
			b = append(b, ',')
		}
		r := &rules[i]
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
		b = append(b, '}')
	}
	return append(b, ']')
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
