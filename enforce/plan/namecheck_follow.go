package plan

import "fmt"

// FollowNameChecks lists, when the name check is on, the rule templates
// of the follower's destinations: for each user and TCP port of its
// follow rules, the names they allow ("*.suffix" allows names up to 4
// labels deeper) and the mode. Every address the follower opens for that
// user and port (from a DNS answer a rule matched) is name-checked
// against them, and against the names learned there if any; the template
// holds no address (Followed is true, IP is the zero Addr).
func (p *Plan) FollowNameChecks() []NameChecked {
	if p.NameCheck == "" || p.NameCheck == NameCheckOff || p.Follow == nil {
		return nil
	}
	var out []NameChecked
	index := map[string]int{}
	seen := map[[2]string]bool{} // a template's names: one user's rules on a port may be many
	enforced := p.userEnforced()
	for _, r := range p.Follow.Rules {
		if r.Proto != ProtoTCP {
			continue
		}
		key := fmt.Sprint(r.UID, r.Port)
		i, ok := index[key]
		if !ok {
			mode := NameCheckAudit
			if p.NameCheck == NameCheckEnforce && enforced(r.UID) {
				mode = NameCheckEnforce
			}
			i = len(out)
			index[key] = i
			out = append(out, NameChecked{UID: r.UID, Proto: r.Proto, Port: r.Port, Mode: mode, Followed: true})
		}
		if k := [2]string{key, r.Name}; !seen[k] {
			seen[k] = true
			out[i].Names = append(out[i].Names, r.Name)
		}
	}
	return out
}
