package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Name check settings (configuration name_check).
const (
	NameCheckOff     = "off"
	NameCheckAudit   = "audit"
	NameCheckEnforce = "enforce"
)

// ParseNameCheck reads off, audit or enforce ("" is off).
func ParseNameCheck(s string) (string, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case "", NameCheckOff:
		return NameCheckOff, nil
	case NameCheckAudit, NameCheckEnforce:
		return v, nil
	}
	return "", fmt.Errorf("name_check %q: want off, audit or enforce", s)
}

// MaxCheckedNames bounds the names of one name-checked element.
const MaxCheckedNames = 32

// checkedNames are the names a learned flow's element is name-checked
// against: its valid DNS names, for a TCP flow, when the name check is on.
// A flow learned without names stays address-only.
func (b *builder) checkedNames(f *FlowNames) []string {
	if b.o.NameCheck == "" || b.o.NameCheck == NameCheckOff || f.Proto != ProtoTCP {
		return nil
	}
	var out []string
	for _, n := range f.Names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if ValidName(n, false) && !slices.Contains(out, n) && len(out) < MaxCheckedNames {
			out = append(out, n)
		}
	}
	return out
}

// FlowNames is what checkedNames needs of a flow.
type FlowNames struct {
	Proto uint8
	Names []string
}

// userEnforced says whether the table enforces a uid's traffic: asked
// per element, so the staged list is made a set once.
func (p *Plan) userEnforced() func(uid uint32) bool {
	switch {
	case p.Mode == ModeEnforce:
		return func(uint32) bool { return true }
	case p.Mode != ModeStaged:
		return func(uint32) bool { return false }
	}
	list, in := p.EnforceUIDs, true
	if len(list) == 0 {
		list, in = p.AuditUIDs, false
	}
	set := setOf(list)
	return func(uid uint32) bool { return set[uid] == in }
}

// NameChecked is a name-checked destination: the names its user may
// present there ("*.suffix" allows names up to 4 labels deeper; an
// element's learned names, a template's follow rules, which the kernel
// also accepts at every element of that user, protocol and port), and
// whether a mismatch is dropped (enforce) or only logged (audit). A user
// the table audits is only audited by the name check either.
type NameChecked struct {
	UID   uint32     `json:"uid"`
	IP    netip.Addr `json:"ip"`
	Proto uint8      `json:"proto"`
	Port  uint16     `json:"port"`
	Mode  string     `json:"mode"`
	Names []string   `json:"names"`
	// Followed: a rule template (FollowNameChecks), for every address
	// the follower opens to UID on Proto and Port; IP is not set.
	Followed bool `json:"followed,omitempty"`
}

// NameChecks lists the plan's name-checked destinations: one per (uid,
// address, protocol, port), whether its element is the user's or a
// service's of that user (match user+service). Elements of a service for
// any user (match service) hold no uid: they stay address-only.
func (p *Plan) NameChecks() []NameChecked {
	if p.NameCheck == "" || p.NameCheck == NameCheckOff {
		return nil
	}
	var out []NameChecked
	index := map[string]int{}
	enforced := p.userEnforced()
	for _, s := range p.Sets {
		for _, e := range s.Elements {
			if len(e.Names) == 0 || e.AnyUser {
				continue
			}
			key := fmt.Sprint(e.UID, e.IP, e.Proto, e.Port)
			i, ok := index[key]
			if !ok {
				i = len(out)
				index[key] = i
				out = append(out, p.nameChecked(e, enforced))
			}
			for _, n := range e.Names {
				if !slices.Contains(out[i].Names, n) {
					out[i].Names = append(out[i].Names, n)
				}
			}
		}
	}
	return out
}

// nameChecked is the name-checked destination of an element: its mode
// and its names. The user's follow rules on that protocol and port are
// not copied in: the kernel accepts them at every check from the user's
// template (FollowNameChecks), and a copy in each element made n
// elements of one user and port hold n names each.
func (p *Plan) nameChecked(e Element, enforced func(uint32) bool) NameChecked {
	mode := NameCheckAudit
	if p.NameCheck == NameCheckEnforce && enforced(e.UID) {
		mode = NameCheckEnforce
	}
	return NameChecked{UID: e.UID, IP: e.IP, Proto: e.Proto, Port: e.Port, Mode: mode, Names: slices.Clone(e.Names)}
}

// nameCheckHeader writes which elements are name-checked, in the
// script's header.
func (p *Plan) nameCheckHeader(b textWriter) {
	checks, followed := p.NameChecks(), p.FollowNameChecks()
	if len(checks) > 0 {
		fmt.Fprintf(b, "# Name check %s: %d elements; \"egress-enforce namecheck\" checks in the kernel that the TLS SNI or\n", headerText(p.NameCheck), len(checks))
		b.WriteString("# HTTP Host a connection presents first is one of the element's names, or of its user's follow rules on\n")
		b.WriteString("# that port (listed once, below: the kernel checks them at every address) (audit: logged only).\n")
		for _, c := range checks {
			fmt.Fprintf(b, "#   uid %d %s %s %s: %s\n", c.UID, ProtoName(c.Proto), netip.AddrPortFrom(c.IP, c.Port), c.Mode, headerNames(c.Names))
		}
	}
	if len(followed) > 0 {
		fmt.Fprintf(b, "# Name check %s of followed addresses: every address the follower opens is checked the same way\n", headerText(p.NameCheck))
		b.WriteString("# against the user's follow rules on that port (and the names learned there).\n")
		for _, c := range followed {
			fmt.Fprintf(b, "#   uid %d %s followed:%d %s: %s\n", c.UID, ProtoName(c.Proto), c.Port, c.Mode, headerNames(c.Names))
		}
	}
}

func headerNames(in []string) string {
	names := make([]string, 0, len(in))
	for _, n := range in {
		names = append(names, headerText(n))
	}
	return strings.Join(names, " ")
}
