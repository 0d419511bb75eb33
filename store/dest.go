package store

import "net/netip"

// Dest is where a flow goes, as the reports show it: the types of the
// reports embed it, so that in JSON its fields stand beside theirs.
type Dest struct {
	Proto     string     `json:"proto"`
	IP        netip.Addr `json:"ip"`
	Port      uint16     `json:"port"`
	Hostnames []string   `json:"hostnames"`
}

// DestOf is k's destination, known by names (an empty list, not null,
// when there are none).
func DestOf(k FlowKey, names []string) Dest {
	if names == nil {
		names = []string{}
	}
	return Dest{Proto: ProtoName(k.Proto), IP: k.IP, Port: k.Port, Hostnames: names}
}
