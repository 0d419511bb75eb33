// Package plan turns a learned baseline into the nftables table to
// install, as a pure value: no kernel, no I/O (it builds for any OS).
//
// Build is a pure function from the baseline and the options to a Plan: one
// table of our own with per-family sets of (uid . address . protocol .
// port) elements, an output chain with the baseline a host needs (replies,
// loopback, IPv6 neighbour discovery, DNS and NTP servers, always_allow
// entries), one set lookup per family, and a counted, logged default.
// A Plan renders to `nft -f` text (Text) for review; package nft encodes
// the same plan as netlink objects for the kernel, and the tests load both
// and compare. Compare diffs a plan with an installed table, Guard is the
// pre-apply check every path that can drop runs.
package plan

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/egresskit/egress/store"
)

// Mode is how the default rule treats traffic the allow-list does not
// cover.
type Mode string

const (
	// ModeAudit logs and counts, blocks nothing: the chain policy stays
	// accept.
	ModeAudit Mode = "audit"
	// ModeEnforce logs, counts and drops: the chain policy is drop.
	ModeEnforce Mode = "enforce"
	// ModeStaged enforces for some users and audits the others: see
	// Options.EnforceUIDs and Options.AuditUIDs.
	ModeStaged Mode = "staged"
)

// ParseMode accepts "audit" or "enforce".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeAudit, ModeEnforce:
		return Mode(s), nil
	}
	return "", fmt.Errorf("mode %q is not audit or enforce", s)
}

// Log prefixes of the default rule; the monitor tells drop from audit by
// them.
const (
	PrefixDrop  = "NFT-EGRESS-DROP "
	PrefixAudit = "NFT-EGRESS-AUDIT "
)

// Protocol numbers.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// ParseProto accepts tcp, udp, icmp, icmpv6.
func ParseProto(s string) (uint8, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	case "icmpv6", "ipv6-icmp":
		return ProtoICMPv6, nil
	}
	return 0, fmt.Errorf("protocol %q is not tcp, udp, icmp or icmpv6", s)
}

// ProtoName is the nft name of a protocol number (store.ProtoName).
var ProtoName = store.ProtoName

// Allow is one explicit allow rule: to Dest (any address when invalid and
// Addrs is empty),
// Proto (any when 0), Port (any when 0), for one user (any when UID is nil).
type Allow struct {
	Proto uint8        `json:"proto"`
	Dest  netip.Prefix `json:"dest"`
	// Addrs, when set instead of Dest, are several host addresses of one
	// family, matched with one lookup in an anonymous set.
	Addrs  []netip.Addr `json:"addrs,omitempty"`
	Port   uint16       `json:"port,omitempty"`
	UID    *uint32      `json:"uid,omitempty"`
	Reason string       `json:"reason"`
}

// Options shape a plan.
type Options struct {
	Table      string // default "egress"
	Mode       Mode
	NFLOGGroup uint16
	// AuditLogRate limits the audit log, in packets per second.
	AuditLogRate uint32
	// DropLogRate limits the log of dropped packets, in packets per
	// second; the counter before the limit and the drop after it see
	// every packet.
	DropLogRate uint32
	// DNSServers are allowed on UDP and TCP 53 for everyone (from
	// resolv.conf and configuration).
	DNSServers []netip.Addr
	// NTPServers are allowed on UDP 123 for everyone (configuration);
	// baseline flows to UDP 123 are added to them.
	NTPServers  []netip.Addr
	AlwaysAllow []Allow
	// MinHits drops flows seen fewer times; Since drops flows not seen
	// since Now-Since (0: keep all).
	MinHits uint64
	Since   time.Duration
	Now     time.Time
	// Staged enforcement, with Mode enforce: EnforceUIDs are enforced and
	// everyone else audited; or AuditUIDs are audited and everyone else
	// enforced. At most one of the two.
	EnforceUIDs []uint32
	AuditUIDs   []uint32
	// Staged enforcement by service (match service or user,service), with
	// Mode enforce: EnforceServices are enforced and everything else
	// audited; or AuditServices are audited and everything else enforced.
	// Services are cgroup v2 paths relative to the mount, as in the
	// service sets. At most one of the four staging lists.
	EnforceServices []string
	AuditServices   []string
	// Follow allows learned flows by name too (see FollowOptions); nil
	// keeps them to their learned addresses.
	Follow *FollowOptions
	// Hosts, for a fleet baseline, lists the hosts that saw each flow: it
	// goes into the elements (JSON) and their comments (a count).
	// AllHosts, when set, saw every flow Hosts does not list.
	Hosts    map[store.FlowKey][]string
	AllHosts []string
	// UserName names UIDs in comments and JSON (optional).
	UserName func(uint32) string
	// Source names the baseline in the header of the text.
	Source string
	// ResolvConf is the file DNSServers were read from (for the record).
	ResolvConf string
	// Match is who the learned flows are allowed for: MatchUser (the
	// default), MatchService or MatchUserService.
	Match string
	// ServiceDepth cuts cgroup paths without a *.service or *.scope
	// component into services (0: such paths stay per user).
	ServiceDepth int
	// CgroupRoot is the cgroup2 mount relative to /sys/fs/cgroup, where
	// nft resolves the cgroup paths of a script ("unified" on a hybrid
	// layout, "" when mounted there).
	CgroupRoot string
	// NameCheck (off, audit or enforce) checks the name TCP flows with
	// names present (TLS SNI, HTTP Host); see namecheck.go.
	NameCheck string
}

// Defaults for Options.
const (
	DefaultTable        = "egress"
	DefaultNFLOGGroup   = 100
	DefaultAuditLogRate = 10
	DefaultDropLogRate  = 100
)

// Check reports options that make no sense together.
func (o *Options) Check() error {
	if _, err := ParseMatch(o.Match); err != nil {
		return err
	}
	if o.ServiceDepth < 0 || o.ServiceDepth > MaxServiceLevel {
		return fmt.Errorf("service_depth %d is not between 0 and %d", o.ServiceDepth, MaxServiceLevel)
	}
	if len(o.EnforceUIDs) > 0 && len(o.AuditUIDs) > 0 {
		return fmt.Errorf("--enforce-users and --audit-users exclude each other: give the users to enforce, or the users to keep in audit")
	}
	if (len(o.EnforceUIDs) > 0 || len(o.AuditUIDs) > 0) && o.Mode != ModeEnforce {
		return fmt.Errorf("--enforce-users and --audit-users stage an enforcement: use them with --mode enforce")
	}
	return o.checkServiceStaging()
}

func (o *Options) defaults() {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Mode == "" {
		o.Mode = ModeAudit
	}
	if o.NFLOGGroup == 0 {
		o.NFLOGGroup = DefaultNFLOGGroup
	}
	if o.AuditLogRate == 0 {
		o.AuditLogRate = DefaultAuditLogRate
	}
	if o.DropLogRate == 0 {
		o.DropLogRate = DefaultDropLogRate
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if m, err := ParseMatch(o.Match); err == nil {
		o.Match = m
	}
}

// Follow modes for learned flows that carry hostnames.
const (
	FollowIP   = "ip"   // the learned addresses only
	FollowName = "name" // whatever the names resolve to, not the learned addresses
	FollowBoth = "both" // the learned addresses, and what the names resolve to
)

// FollowOptions say which names are followed.
type FollowOptions struct {
	// Mode applies to learned flows with hostnames: ip, name or both.
	Mode string
	// IPOnly lists learned names kept to their learned addresses.
	IPOnly []string
	// Names are rules an operator wrote; only these may have wildcards.
	Names []NameRule
	// TTLFloor is the least time a followed address stays allowed, TTLMax
	// the most; MaxPerName bounds the addresses of one rule's name; Mark
	// is the socket-mark bit of just-resolved destinations.
	TTLFloor   time.Duration
	TTLMax     time.Duration
	MaxPerName int
	Mark       uint32
}

// NameRule allows a user to reach a name's current addresses on one
// protocol and port.
type NameRule struct {
	UID    uint32 `json:"uid"`
	User   string `json:"user,omitempty"`
	Name   string `json:"name"` // lower case, no trailing dot; "*.suffix" from configuration only
	Proto  uint8  `json:"proto"`
	Port   uint16 `json:"port"`
	Source string `json:"source"` // learned or configuration
}

// FollowSpec is what a plan follows: its rules and their settings.
type FollowSpec struct {
	Rules      []NameRule    `json:"rules"`
	TTLFloor   time.Duration `json:"ttl_floor_ns"`
	TTLMax     time.Duration `json:"ttl_max_ns,omitempty"` // 0 in plans older than the cap: DefaultTTLMax
	MaxPerName int           `json:"max_per_name"`
	Mark       uint32        `json:"mark"`
}

// MaxTTL is the TTL cap; plans older than the cap have none: the default.
func (f *FollowSpec) MaxTTL() time.Duration {
	if f.TTLMax <= 0 {
		return DefaultTTLMax
	}
	return f.TTLMax
}

// FollowGateComment is the comment of the follow_gate set.
const FollowGateComment = "cgroups of running followers: the follow mark counts only for their sockets"

// Set names of followed addresses (timeout sets, filled by the follower).
const (
	SetFollow4 = "follow4"
	SetFollow6 = "follow6"
	// FollowSetSize bounds the followed addresses of a family.
	FollowSetSize = 65536
	// SetFollowGate holds the cgroups of the running followers (cgroup v2
	// ids, with a timeout each follower keeps refreshing): the follow mark
	// counts only for sockets in one of them.
	SetFollowGate = "follow_gate"
	// FollowGateLevels is how deep in the cgroup tree a follower's cgroup
	// may be: one mark rule per level, 0 (the root) to 7.
	FollowGateLevels = 8
	// FollowGateTimeout is the gate element's timeout when the follower
	// gives none.
	FollowGateTimeout = 5 * time.Second
)

// Plan is the table to install.
type Plan struct {
	Table  string `json:"table"`
	Family string `json:"family"` // always "inet"
	Mode   Mode   `json:"mode"`
	// Staged enforcement (Mode staged): who is enforced, or who is audited.
	EnforceUIDs []uint32 `json:"enforce_uids,omitempty"`
	AuditUIDs   []uint32 `json:"audit_uids,omitempty"`
	// Staged enforcement by service: the services enforced, or audited
	// (cgroup v2 paths), whether they run or not.
	EnforceServices []string `json:"enforce_services,omitempty"`
	AuditServices   []string `json:"audit_services,omitempty"`
	// NFLOGGroup, AuditLogRate and DropLogRate shape the default rules.
	// A plan of a version without DropLogRate (0) logged every drop in
	// the rule that dropped: restored, it renders the same.
	NFLOGGroup   uint16 `json:"nflog_group"`
	AuditLogRate uint32 `json:"audit_log_rate"`
	DropLogRate  uint32 `json:"drop_log_rate,omitempty"`
	Chain        Chain  `json:"chain"`
	Sets         []Set  `json:"sets"`
	// UserSets name the users of staged enforcement.
	UserSets []UserSet `json:"user_sets,omitempty"`
	// ServiceSets name the services of staged enforcement by service
	// (after Running: only those that run, the others are in Stopped).
	ServiceSets []ServiceSet `json:"service_sets,omitempty"`
	// Follow, when set, adds the name rules: the follower fills the
	// follow sets from DNS answers.
	Follow  *FollowSpec `json:"follow,omitempty"`
	Rules   []Rule      `json:"rules"`
	Skipped []Skipped   `json:"skipped,omitempty"`
	// Flows is how many baseline flows the sets hold.
	Flows  int       `json:"flows"`
	Source string    `json:"source,omitempty"`
	Built  time.Time `json:"built"`
	// ResolvConf is the file the DNS servers were read from.
	ResolvConf string `json:"resolv_conf,omitempty"`
	// Match is who learned flows are allowed for (Options.Match); ""
	// in plans older than services: user.
	Match string `json:"match,omitempty"`
	// CgroupRoot is where the text's cgroup paths start, relative to
	// /sys/fs/cgroup (Options.CgroupRoot).
	CgroupRoot string `json:"cgroup_root,omitempty"`
	// Stopped are the services whose elements Running left out.
	Stopped []string `json:"stopped,omitempty"`
	// NameCheck: off (or empty), audit or enforce; see NameChecks.
	NameCheck string `json:"name_check,omitempty"`
}

// Chain is the output chain.
type Chain struct {
	Name     string `json:"name"`
	Hook     string `json:"hook"`
	Priority string `json:"priority"`
	Policy   string `json:"policy"` // accept or drop
}

// Set names.
const (
	SetAllow4 = "allow4"
	SetAllow6 = "allow6"
)

// Set is a named set of allow elements of one family.
type Set struct {
	Name     string    `json:"name"`
	Family   int       `json:"family"` // 4 or 6
	Comment  string    `json:"comment"`
	Elements []Element `json:"elements"`
	// Capacity is the room the set is made with: for the allow sets
	// SetSize of their elements (a delta apply can add some; 0 in plans
	// recorded before: their number of elements); for a service set
	// Running left services out of, the room kept for their elements when
	// they start.
	Capacity int `json:"capacity,omitempty"`
}

// Size is the number of elements the set has room for.
func (s *Set) Size() int { return max(len(s.Elements), s.Capacity) }

// UserSet is a named set of UIDs (type uid).
type UserSet struct {
	Name string   `json:"name"`
	UIDs []uint32 `json:"uids"`
}

// Names of the user sets of staged enforcement.
const (
	SetEnforceUsers = "enforce_users"
	SetAuditUsers   = "audit_users"
)

// Element is one learned flow: uid . address . protocol . port; in a
// service set, service . [uid .] address . protocol . port.
type Element struct {
	// Service is the cgroup v2 path of the service (relative to the
	// cgroup2 mount), in the service sets only.
	Service string `json:"service,omitempty"`
	// AnyUser: the service's element holds no uid (match service).
	AnyUser bool       `json:"any_user,omitempty"`
	UID     uint32     `json:"uid"`
	User    string     `json:"user,omitempty"`
	IP      netip.Addr `json:"ip"`
	Proto   uint8      `json:"proto"`
	Port    uint16     `json:"port"`
	Comment string     `json:"comment"`
	// Hosts saw the flow (a fleet baseline); empty for one host's.
	Hosts []string `json:"hosts,omitempty"`
	// Names, when set, are the names a connection must present (TLS
	// SNI, HTTP Host): the element is name-checked.
	Names []string `json:"names,omitempty"`
}

// Elements is how many elements the allow sets hold.
func (p *Plan) Elements() int {
	n := 0
	for _, s := range p.Sets {
		n += len(s.Elements)
	}
	return n
}

func (e Element) flowKey() store.FlowKey {
	return store.FlowKey{UID: e.UID, Proto: e.Proto, IP: e.IP, Port: e.Port}
}

// Key identifies an element: "uid . address . protocol . port", as nft
// writes it (a service's element starts with its cgroup path).
func (e Element) Key() string {
	if e.Service != "" {
		return e.serviceKey("")
	}
	return string(e.appendKey(nil))
}

func (e Element) appendKey(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(e.UID), 10)
	b = append(b, " . "...)
	b = appendAddr(b, e.IP)
	b = append(b, " . "...)
	b = append(b, ProtoName(e.Proto)...)
	b = append(b, " . "...)
	return strconv.AppendUint(b, uint64(e.Port), 10)
}

// RuleKind says what a rule does; each kind renders one way.
type RuleKind string

const (
	RuleEstablished RuleKind = "established"
	RuleLoopback    RuleKind = "loopback"
	RuleICMPv6ND    RuleKind = "icmpv6-nd"
	RuleAllow       RuleKind = "allow"
	RuleLookup      RuleKind = "lookup"
	RuleDefault     RuleKind = "default"
	RuleDrop        RuleKind = "drop"
	RuleAuditAccept RuleKind = "audit-accept"
	RuleFollowMark  RuleKind = "follow-mark"
	// RuleServiceLookup looks the socket's cgroup at Level up in a
	// service set.
	RuleServiceLookup RuleKind = "service-lookup"
)

// Rule is one rule of the output chain.
type Rule struct {
	Kind    RuleKind `json:"kind"`
	Allow   *Allow   `json:"allow,omitempty"`  // RuleAllow
	Set     string   `json:"set,omitempty"`    // RuleLookup; RuleDefault, RuleAuditAccept, RuleDrop: the users' set; RuleFollowMark: the gate
	Action  string   `json:"action,omitempty"` // RuleDefault: drop or audit
	Family  int      `json:"family,omitempty"` // RuleLookup, RuleAllow (from Dest)
	Level   int      `json:"level,omitempty"`  // RuleFollowMark, RuleServiceLookup: the cgroup level matched
	Comment string   `json:"comment"`          // also the rule's identity in diffs
	Text    string   `json:"text"`             // the nft statement
}

// Skipped is a baseline flow left out of the plan, and why.
type Skipped struct {
	Flow   string `json:"flow"`
	Reason string `json:"reason"`
}

// ICMPv6ND are the ICMPv6 types a host sends for neighbour discovery and
// multicast listener reports; a drop policy would otherwise cut them.
var ICMPv6ND = []struct {
	Type uint8
	Name string
}{
	{133, "nd-router-solicit"},
	{135, "nd-neighbor-solicit"},
	{136, "nd-neighbor-advert"},
	{131, "mld-listener-report"},
	{143, "mld2-listener-report"},
}

// Build makes the plan for flows.
func Build(flows []store.Flow, o Options) *Plan { return BuildWith(flows, Plain{}, o) }

// BuildWith is Build of flows and of the flows whose elements plain holds
// (see Plainer): the same plan as Build of all of them.
func BuildWith(flows []store.Flow, plain Plain, o Options) *Plan {
	o.defaults()
	b := newBuilder(&o)
	b.reserve(flows)
	for i := range flows {
		b.add(&flows[i])
	}
	p := b.p
	p.Flows += plain.N
	for _, s := range []*Set{&b.set4, &b.set6} {
		extra := plain.V4
		if s.Family == 6 {
			extra = plain.V6
		}
		s.Elements = mergeElements(s.Elements, extra)
		if len(s.Elements) == 0 {
			s.Elements = nil // as if never reserved
		}
		s.Comment, s.Capacity = SetComment, SetSize(len(s.Elements))
	}
	if o.Follow != nil {
		names, sorted := b.names, plain.SortedRules
		if !plain.RulesSorted {
			names, sorted = append(names, plain.Rules...), nil
		}
		// A table that follows no name has no follow sets and no mark rule.
		if p.Follow = followSpec(names, sorted, o); len(p.Follow.Rules) == 0 {
			p.Follow = nil
		}
	}
	p.Sets = []Set{b.set4, b.set6}
	p.Rules = append(baseRules(o, b.ntp), b.finishServices()...)
	p.Rules = append(p.Rules,
		Rule{Kind: RuleLookup, Set: SetAllow4, Family: 4, Comment: "learned ipv4 flows"},
		Rule{Kind: RuleLookup, Set: SetAllow6, Family: 6, Comment: "learned ipv6 flows"},
	)
	if p.Follow != nil {
		p.Rules = append(p.Rules,
			Rule{Kind: RuleLookup, Set: SetFollow4, Family: 4, Comment: "dns-followed ipv4 addresses"},
			Rule{Kind: RuleLookup, Set: SetFollow6, Family: 6, Comment: "dns-followed ipv6 addresses"},
		)
		p.Rules = append(p.Rules, followMarkRules()...)
	}
	p.Rules = append(p.Rules, p.defaultRules()...)
	for i := range p.Rules {
		p.Rules[i].Text = p.RuleText(&p.Rules[i])
	}
	return p
}

// newBuilder is a builder of a plan of options o (defaults set).
func newBuilder(o *Options) *builder {
	b := &builder{p: newPlan(*o), o: o, ntp: slices.Clone(o.NTPServers),
		set4: Set{Name: SetAllow4, Family: 4}, set6: Set{Name: SetAllow6, Family: 6},
		svc4: Set{Name: SetService4, Family: 4}, svc6: Set{Name: SetService6, Family: 6}}
	if o.Follow != nil {
		b.ipOnly = setOf(o.Follow.IPOnly)
	}
	return b
}

// newPlan is an empty plan of the options' table, mode and staging.
func newPlan(o Options) *Plan {
	p := &Plan{
		Table:        o.Table,
		Family:       "inet",
		Mode:         o.Mode,
		NFLOGGroup:   o.NFLOGGroup,
		AuditLogRate: o.AuditLogRate,
		DropLogRate:  o.DropLogRate,
		Chain:        Chain{Name: "output", Hook: "output", Priority: "filter", Policy: "accept"},
		Source:       o.Source,
		ResolvConf:   o.ResolvConf,
		NameCheck:    strings.TrimPrefix(o.NameCheck, NameCheckOff),
		Built:        o.Now.UTC().Truncate(time.Second),
	}
	if o.Match != MatchUser {
		p.Match, p.CgroupRoot = o.Match, o.CgroupRoot
	}
	p.stage(o.Mode, o.EnforceUIDs, o.AuditUIDs, o.EnforceServices, o.AuditServices)
	return p
}

// builder sorts the baseline's flows into the plan.
type builder struct {
	p          *Plan
	o          *Options
	set4, set6 Set
	svc4, svc6 Set             // the services' flows (match service or user,service)
	ntp        []netip.Addr    // the NTP servers, and those the baseline reaches
	names      []NameRule      // learned names to follow
	ipOnly     map[string]bool // Follow.IPOnly
	comments   commentSlab     // the elements' comments
}

// reserve sizes the sets and the names for flows at once (a baseline of
// 100,000 flows grows them a dozen times otherwise).
func (b *builder) reserve(flows []store.Flow) {
	v4, names := 0, 0
	for i := range flows {
		if flows[i].IP.Is4() {
			v4++
		}
		names += len(flows[i].Hostnames)
	}
	// Nil stays nil where nothing goes (a plan's JSON tells them apart).
	if v4 > 0 {
		b.set4.Elements = make([]Element, 0, v4)
	}
	if len(flows) > v4 {
		b.set6.Elements = make([]Element, 0, len(flows)-v4)
	}
	if b.o.Follow != nil && names > 0 {
		b.names = make([]NameRule, 0, names)
	}
}

// add puts one flow in the plan: as an element, as names to follow, or
// as a skipped flow with the reason.
func (b *builder) add(f *store.Flow) {
	o := b.o
	if why := b.skip(f); why != "" {
		desc := fmt.Sprintf("uid %d %s %s", f.UID, ProtoName(f.Proto), netip.AddrPortFrom(f.IP, f.Port))
		b.p.Skipped = append(b.p.Skipped, Skipped{desc, why})
		return
	}
	if f.IP.IsLoopback() {
		return // the loopback rule covers it
	}
	if f.Proto == ProtoUDP && f.Port == 123 {
		b.ntp = append(b.ntp, f.IP) // repeats go in baseRules (byFamily)
	}
	b.p.Flows++
	// Name rules are per user: a flow that only services made keeps its
	// learned addresses, or its names would open them to the whole user.
	if !b.serviceOnly(f) && b.follow(f) && o.Follow.Mode == FollowName {
		return // the names stand for the addresses
	}
	hosts := o.Hosts[f.FlowKey]
	if hosts == nil {
		hosts = o.AllHosts
	}
	e := b.element(f, hosts)
	if !b.addService(f, e) {
		return // its services allow it
	}
	if f.IP.Is4() {
		b.set4.Elements = append(b.set4.Elements, e)
	} else {
		b.set6.Elements = append(b.set6.Elements, e)
	}
}

// element is f's element, seen by hosts.
func (b *builder) element(f *store.Flow, hosts []string) Element {
	e := Element{UID: f.UID, IP: f.IP, Proto: f.Proto, Port: f.Port, Comment: b.comments.comment(f, len(hosts)), Hosts: hosts,
		Names: b.checkedNames(&FlowNames{f.Proto, f.Hostnames})}
	if b.o.UserName != nil {
		e.User = b.o.UserName(f.UID)
	}
	return e
}

// skip says why a flow is left out of the plan ("": it is not).
func (b *builder) skip(f *store.Flow) string {
	o := b.o
	switch {
	case f.Hits < o.MinHits:
		return fmt.Sprintf("%d hits, fewer than --min-hits %d", f.Hits, o.MinHits)
	case o.Since > 0 && f.LastSeen.Before(o.Now.Add(-o.Since)):
		return fmt.Sprintf("last seen %s, before --since %s", f.LastSeen.UTC().Format(time.RFC3339), o.Since)
	case f.Proto != ProtoTCP && f.Proto != ProtoUDP:
		return "only tcp and udp flows are learned into the allow-list; allow others with always_allow"
	case CheckAddr(f.IP) != nil:
		return "not an address of a rule: " + CheckAddr(f.IP).Error()
	}
	return ""
}

// follow adds the flow's names to follow; it reports whether it has one.
func (b *builder) follow(f *store.Flow) bool {
	o := b.o
	if o.Follow == nil {
		return false
	}
	followed := false
	for _, n := range f.Hostnames {
		if b.followsName(n) {
			b.names = append(b.names, learnedRule(f.FlowKey, n))
			followed = true
		}
	}
	return followed
}

// followsName reports whether a flow's hostname n is followed (with
// Follow set).
func (b *builder) followsName(n string) bool {
	if b.o.Follow.Mode == FollowIP || !ValidName(n, false) {
		return false
	}
	return !b.ipOnly[n]
}

// setOf is the set of list's entries: a list of the options is looked
// up per flow or element, and the configuration may make it as long as
// it likes.
func setOf[T comparable](list []T) map[T]bool {
	set := make(map[T]bool, len(list))
	for _, v := range list {
		set[v] = true
	}
	return set
}

// learnedRule is the name rule of name n of the flow of key k.
func learnedRule(k store.FlowKey, n string) NameRule {
	return NameRule{UID: k.UID, Name: n, Proto: k.Proto, Port: k.Port, Source: "learned"}
}

// baseRules are the rules before the lookups: replies, loopback, IPv6
// neighbour discovery, the DNS and NTP servers, always_allow.
func baseRules(o Options, ntp []netip.Addr) []Rule {
	rules := []Rule{
		{Kind: RuleEstablished, Comment: "replies and related traffic of allowed connections"},
		{Kind: RuleLoopback, Comment: "loopback"},
		{Kind: RuleICMPv6ND, Comment: "ipv6 neighbour discovery and multicast listener reports"},
	}
	// One rule per family and protocol, however many servers: each rule
	// before the set lookup costs every new packet.
	for _, fam := range byFamily(o.DNSServers) {
		for _, proto := range []uint8{ProtoUDP, ProtoTCP} {
			rules = append(rules, allowRule(hostsAllow(fam, proto, 53, ReasonDNS)))
		}
	}
	for _, fam := range byFamily(ntp) {
		rules = append(rules, allowRule(hostsAllow(fam, ProtoUDP, 123, "ntp servers")))
	}
	for i, a := range o.AlwaysAllow {
		if a.Reason == "" {
			a.Reason = fmt.Sprintf("always_allow #%d", i+1)
		}
		rules = append(rules, allowRule(a))
	}
	return rules
}

// ClosedPlan is the table of boot_policy closed: replies, loopback, IPv6
// neighbour discovery, the DNS and NTP servers and the always_allow
// entries of o; everything else is dropped and logged.
func ClosedPlan(o Options) *Plan {
	o.Mode = ModeEnforce
	o.EnforceUIDs, o.AuditUIDs, o.Follow, o.Hosts, o.AllHosts = nil, nil, nil, nil, nil
	o.Source = "boot_policy closed: no generation to restore"
	return Build(nil, o)
}

// LogGroup is the NFLOG group of the default rules.
func (p *Plan) LogGroup() uint16 {
	if p.NFLOGGroup == 0 {
		return DefaultNFLOGGroup
	}
	return p.NFLOGGroup
}

// AuditRate is the audit log's limit, in packets per second.
func (p *Plan) AuditRate() uint32 {
	if p.AuditLogRate == 0 {
		return DefaultAuditLogRate
	}
	return p.AuditLogRate
}

// byFamily sorts and dedups addresses and splits them into IPv4 and IPv6.
func byFamily(addrs []netip.Addr) [][]netip.Addr {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	var out [][]netip.Addr
	for _, l := range [][]netip.Addr{v4, v6} {
		if len(l) > 0 {
			slices.SortFunc(l, netip.Addr.Compare)
			out = append(out, slices.Compact(l))
		}
	}
	return out
}

// hostsAllow allows proto/port to the addresses (of one family): a plain
// match for one, an anonymous set for more.
func hostsAllow(addrs []netip.Addr, proto uint8, port uint16, reason string) Allow {
	a := Allow{Proto: proto, Port: port, Reason: reason}
	if len(addrs) == 1 {
		a.Dest = hostPrefix(addrs[0])
	} else {
		a.Addrs = addrs
	}
	return a
}

// Defaults of following.
const (
	DefaultTTLFloor   = 5 * time.Minute
	DefaultTTLMax     = time.Hour
	DefaultMaxPerName = 64
	DefaultFollowMark = 0x10000000
)

// followMarkRules accept the first packets to a just-resolved address:
// packets with the follow mark, from a socket in the cgroup of a running
// follower (set follow_gate), which drops in the kernel every marked
// packet whose socket it did not authorize for that destination. One rule
// per level of the cgroup tree, since a rule matches the socket's
// ancestor at one level.
func followMarkRules() []Rule {
	r := make([]Rule, FollowGateLevels)
	for l := range r {
		r[l] = Rule{Kind: RuleFollowMark, Level: l, Set: SetFollowGate,
			Comment: fmt.Sprintf("%s, follower cgroup at level %d", followMarkComment, l)}
	}
	return r
}

// followMarkComment begins the comment of every follow-mark rule.
const followMarkComment = "dns-followed: just resolved"

// IsFollowMarkComment reports whether a rule's comment is a follow-mark
// rule's: status sums their counters.
func IsFollowMarkComment(c string) bool { return strings.HasPrefix(c, followMarkComment+",") }

// followSpec gathers the name rules: the learned ones and the operator's,
// deduplicated and sorted.
func followSpec(learned, sorted []NameRule, o Options) *FollowSpec {
	f := &FollowSpec{TTLFloor: o.Follow.TTLFloor, TTLMax: o.Follow.TTLMax, MaxPerName: o.Follow.MaxPerName, Mark: o.Follow.Mark}
	if f.TTLFloor <= 0 {
		f.TTLFloor = DefaultTTLFloor
	}
	if f.TTLMax <= 0 {
		f.TTLMax = DefaultTTLMax
	}
	f.TTLMax = max(f.TTLMax, f.TTLFloor)
	if f.MaxPerName <= 0 {
		f.MaxPerName = DefaultMaxPerName
	}
	if f.Mark == 0 {
		f.Mark = DefaultFollowMark
	}
	for _, r := range o.Follow.Names {
		r.Source = "configuration"
		learned = append(learned, r)
	}
	for _, l := range [][]NameRule{learned, sorted} {
		for i := range l {
			if o.UserName != nil {
				l[i].User = o.UserName(l[i].UID)
			}
		}
	}
	sortNameRules(learned)
	learned = mergeRules(learned, sorted)
	f.Rules = slices.CompactFunc(learned, func(a, b NameRule) bool {
		return a.UID == b.UID && a.Name == b.Name && a.Proto == b.Proto && a.Port == b.Port
	})
	if f.Rules == nil {
		f.Rules = []NameRule{}
	}
	return f
}

// sortNameRules sorts rules by compareNameRules. A large list is sorted
// by keys of 24 bytes (the UID and the name's first 12 bytes, then the
// rule's place), the two halves on two cores, then merged: rules whose
// keys are equal are compared whole, so the order is compareNameRules'.
// Rules that compare equal are equal, so the result is the one
// slices.SortFunc gives.
func sortNameRules(rules []NameRule) {
	if len(rules) < 4096 {
		slices.SortFunc(rules, compareNameRules)
		return
	}
	keys := make([]ruleKey, len(rules))
	for i := range rules {
		keys[i] = keyOfRule(&rules[i], i)
	}
	compare := func(a, b ruleKey) int {
		if a.hi != b.hi {
			return cmp.Compare(a.hi, b.hi)
		}
		if a.lo != b.lo {
			return cmp.Compare(a.lo, b.lo)
		}
		return compareNameRules(rules[a.i], rules[b.i])
	}
	mid := len(keys) / 2
	var wg sync.WaitGroup
	wg.Go(func() { slices.SortFunc(keys[mid:], compare) })
	slices.SortFunc(keys[:mid], compare)
	wg.Wait()
	out := make([]NameRule, len(rules))
	i, j := 0, mid
	for k := range out {
		if j == len(keys) || i < mid && compare(keys[i], keys[j]) <= 0 {
			out[k], i = rules[keys[i].i], i+1
		} else {
			out[k], j = rules[keys[j].i], j+1
		}
	}
	copy(rules, out)
}

// ruleKey is a name rule's sort key: its UID and the first 4 bytes of its
// name (hi), the next 8 (lo), zero-padded, and its place. Keys ordered by
// hi and lo order their rules as compareNameRules does, but for equal
// keys (a DNS name holds no zero byte; when one does, a shorter name's
// padding is still below the longer's byte or equal to it).
type ruleKey struct {
	hi, lo uint64
	i      int
}

func keyOfRule(r *NameRule, i int) ruleKey {
	var b [12]byte
	copy(b[:], r.Name)
	return ruleKey{hi: uint64(r.UID)<<32 | uint64(binary.BigEndian.Uint32(b[:4])), lo: binary.BigEndian.Uint64(b[4:]), i: i}
}

// compareNameRules orders name rules by UID, name, protocol, port and
// source (comparing no further than it must: a large baseline has a few
// hundred thousand).
func compareNameRules(a, b NameRule) int {
	if a.UID != b.UID {
		return cmp.Compare(a.UID, b.UID)
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if a.Proto != b.Proto {
		return cmp.Compare(a.Proto, b.Proto)
	}
	if a.Port != b.Port {
		return cmp.Compare(a.Port, b.Port)
	}
	return strings.Compare(a.Source, b.Source)
}

// ValidName accepts a DNS name as the follower hashes it: lower case, no
// trailing dot, letters, digits, hyphens, underscores; a leading "*." only
// when wildcard.
func ValidName(n string, wildcard bool) bool {
	if wildcard && strings.HasPrefix(n, "*.") {
		n = n[2:]
	}
	if n == "" || len(n) > 253 || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") || strings.Contains(n, "..") {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// ValidRuleName checks a configured name rule's name: "*.suffix" allowed.
func ValidRuleName(n string) error {
	if !ValidName(n, true) {
		return fmt.Errorf("%q is not a name to follow (lower case, no trailing dot; a wildcard only as a leading \"*.\")", n)
	}
	return nil
}

func sortedUIDs(u []uint32) []uint32 {
	u = slices.Clone(u)
	slices.Sort(u)
	return slices.Compact(u)
}

func uidList(u []uint32) string {
	s := make([]string, len(u))
	for i, v := range u {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, " ")
}

// defaultRules say what happens to what the allow-list did not accept.
// Staged enforcement matches its users in a named set (status reads the
// users back from it). A log rule stops at its rate limit, so the drop is
// a rule of its own after it: every packet is counted (before the limit)
// and dropped, and only the log is limited.
func (p *Plan) defaultRules() []Rule {
	drop := func(set, who string) []Rule {
		return []Rule{
			{Kind: RuleDefault, Action: "drop", Set: set, Comment: "default enforce: " + who},
			{Kind: RuleDrop, Set: set, Comment: "default enforce: drop " + who},
		}
	}
	audit := func(set, who string) Rule {
		return Rule{Kind: RuleDefault, Action: "audit", Set: set, Comment: "default audit: " + who}
	}
	switch {
	case len(p.EnforceUIDs) > 0:
		return append(drop(SetEnforceUsers, "uids "+uidList(p.EnforceUIDs)), audit("", "everyone else"))
	case len(p.AuditUIDs) > 0:
		return append([]Rule{
			audit(SetAuditUsers, "uids "+uidList(p.AuditUIDs)),
			// The log rule stops at its rate limit: accept separately.
			{Kind: RuleAuditAccept, Set: SetAuditUsers, Comment: "audited users pass"},
		}, drop("", "everyone else")...)
	case len(p.EnforceServices) > 0 || len(p.AuditServices) > 0:
		return p.serviceDefaultRules()
	case p.Mode == ModeEnforce:
		return drop("", "everyone")
	}
	return []Rule{audit("", "everyone")}
}

func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

func allowRule(a Allow) Rule {
	r := Rule{Kind: RuleAllow, Allow: &a, Family: a.Family()}
	desc := []string{a.Reason + ":"}
	if a.UID != nil {
		desc = append(desc, "uid "+strconv.FormatUint(uint64(*a.UID), 10))
	}
	if a.Proto != 0 {
		desc = append(desc, ProtoName(a.Proto))
	}
	switch {
	case len(a.Addrs) > 0:
		for _, ad := range a.Addrs {
			desc = append(desc, ad.String())
		}
	case a.Dest.IsValid():
		desc = append(desc, a.Dest.String())
	default:
		desc = append(desc, "any address")
	}
	if a.Port != 0 {
		desc = append(desc, "port "+strconv.Itoa(int(a.Port)))
	}
	r.Comment = sanitizeComment(strings.Join(desc, " "))
	return r
}

// maxComment is nft's limit on a comment's length.
const maxComment = 128

// elementCommentMax bounds an element's comment. The kernel stores it with
// the element: at 100,000 elements every byte of comment adds about 3 ms
// to an apply (measured: 120-byte comments made it 3.3x slower than none).
const elementCommentMax = 64

// elementComment says why an element is there: hits, last seen, how many
// hosts saw it (fleet baselines), and the names the address was resolved
// from ("+N" for those that do not fit).
// The processes are in the report.
func elementComment(f *store.Flow, hosts int) string {
	b := appendElementComment(make([]byte, 0, elementCommentMax+8), f, hosts)
	if len(b) <= maxComment-1 && cleanASCII(string(b), true) { // what sanitizeComment gives, without copying twice
		return string(b)
	}
	return sanitizeComment(string(b))
}

// commentSlab hands out the bytes of element comments from blocks of
// commentBlock: one allocation for hundreds of comments, not two for
// each. A block is only appended to, never written over.
type commentSlab struct{ buf []byte }

const commentBlock = 64 << 10

// comment is elementComment, its bytes in the slab.
func (s *commentSlab) comment(f *store.Flow, hosts int) string {
	if cap(s.buf)-len(s.buf) < 2*maxComment {
		s.buf = make([]byte, 0, commentBlock)
	}
	start := len(s.buf)
	b := appendElementComment(s.buf, f, hosts)
	c := b[start:]
	if len(c) > maxComment-1 || !cleanASCII(unsafe.String(unsafe.SliceData(c), len(c)), true) {
		return sanitizeComment(string(c)) // the slab takes nothing
	}
	if len(c) == 0 || unsafe.SliceData(b) != unsafe.SliceData(s.buf) {
		return string(c) // it outgrew the block: a copy of its own
	}
	s.buf = b
	return unsafe.String(unsafe.SliceData(c), len(c))
}

// appendElementComment appends what elementComment says.
func appendElementComment(b []byte, f *store.Flow, hosts int) []byte {
	start := len(b)
	b = append(b, "hits "...)
	b = strconv.AppendUint(b, f.Hits, 10)
	b = append(b, ", last "...)
	b = appendDate(b, f.LastSeen)
	if hosts > 0 {
		b = append(b, ", hosts "...)
		b = strconv.AppendInt(b, int64(hosts), 10)
	}
	for i, n := range f.Hostnames {
		sep := ", "
		if i > 0 {
			sep = " "
		}
		rest := len(f.Hostnames) - i
		more := 0
		if rest > 1 {
			more = 4 // room for " +N"
		}
		// The first name always goes in (nft allows 128 bytes); the
		// others only while they fit.
		if i > 0 && len(b)-start+len(sep)+len(n)+more > elementCommentMax {
			b = append(b, " +"...)
			b = strconv.AppendInt(b, int64(rest), 10)
			break
		}
		b = append(b, sep...)
		b = append(b, n...)
	}
	return b
}

// appendDate appends t's UTC day as time's "2006-01-02" does, without
// the formatter (a hundred thousand comments).
func appendDate(b []byte, t time.Time) []byte {
	y, m, d := t.UTC().Date()
	if y < 0 || y > 9999 {
		return t.UTC().AppendFormat(b, "2006-01-02")
	}
	return append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+int(m)/10), byte('0'+int(m)%10), '-', byte('0'+d/10), byte('0'+d%10))
}

// sanitizeComment keeps characters nft accepts inside a quoted comment and
// cuts at its length limit (the one path of escape.go).
func sanitizeComment(s string) string { return clean(s, true, maxComment-1) }

// RuleText is the nft statement of a rule, without its comment (what
// Build puts in Rule.Text).
func (p *Plan) RuleText(r *Rule) string {
	switch r.Kind {
	case RuleEstablished:
		return "ct state established,related accept"
	case RuleLoopback:
		return `oifname "lo" accept`
	case RuleICMPv6ND:
		names := make([]string, len(ICMPv6ND))
		for i, t := range ICMPv6ND {
			names[i] = t.Name
		}
		return "icmpv6 type { " + strings.Join(names, ", ") + " } accept"
	case RuleAllow:
		return allowText(r.Allow)
	case RuleLookup:
		ip := "ip"
		if r.Family == 6 {
			ip = "ip6"
		}
		return fmt.Sprintf("meta skuid . %s daddr . meta l4proto . th dport @%s counter accept", ip, r.Set)
	case RuleDefault:
		// The first counter sees every packet, the second the packets the
		// limit lets through to the log: their difference went unlogged.
		who := whoText(r)
		switch {
		case p.DropLogRate == 0 && r.Action == "drop": // a plan from before drop_log_rate
			return fmt.Sprintf("%scounter log prefix %q group %d drop", who, PrefixDrop, p.LogGroup())
		case p.DropLogRate == 0:
			return fmt.Sprintf("%scounter limit rate %d/second log prefix %q group %d", who, p.AuditRate(), PrefixAudit, p.LogGroup())
		case r.Action == "drop":
			return fmt.Sprintf("%scounter limit rate %d/second counter log prefix %q group %d", who, p.DropLogRate, PrefixDrop, p.LogGroup())
		}
		return fmt.Sprintf("%scounter limit rate %d/second counter log prefix %q group %d", who, p.AuditRate(), PrefixAudit, p.LogGroup())
	case RuleDrop:
		return whoText(r) + "drop"
	case RuleAuditAccept:
		return whoText(r) + "accept"
	case RuleServiceLookup:
		return p.serviceLookupText(r)
	case RuleFollowMark:
		return fmt.Sprintf("meta mark & 0x%08x == 0x%08x socket cgroupv2 level %d @%s counter accept", p.Follow.Mark, p.Follow.Mark, r.Level, r.Set)
	}
	panic("unknown rule kind " + r.Kind)
}

// Family is 4 or 6 when the rule matches a destination, 0 when not.
func (a *Allow) Family() int {
	switch {
	case len(a.Addrs) > 0 && a.Addrs[0].Is4(), a.Dest.IsValid() && a.Dest.Addr().Is4():
		return 4
	case len(a.Addrs) > 0, a.Dest.IsValid():
		return 6
	}
	return 0
}

// usersText matches the socket's owner against a named set of UIDs.
func usersText(set string) string {
	if set == "" {
		return ""
	}
	return "meta skuid @" + set + " "
}

func allowText(a *Allow) string {
	var parts []string
	if a.UID != nil {
		parts = append(parts, fmt.Sprintf("meta skuid %d", *a.UID))
	}
	if len(a.Addrs) > 0 {
		ip := "ip"
		if a.Family() == 6 {
			ip = "ip6"
		}
		list := make([]string, len(a.Addrs))
		for i, ad := range a.Addrs {
			list[i] = addrText(ad)
		}
		parts = append(parts, ip+" daddr { "+strings.Join(list, ", ")+" }")
	}
	if a.Dest.IsValid() {
		ip := "ip"
		if a.Dest.Addr().Is6() {
			ip = "ip6"
		}
		dest := addrText(a.Dest.Addr())
		if a.Dest.Bits() != a.Dest.Addr().BitLen() {
			dest = a.Dest.String()
		}
		parts = append(parts, ip+" daddr "+dest)
	}
	switch {
	case a.Port != 0:
		parts = append(parts, fmt.Sprintf("%s dport %d", ProtoName(a.Proto), a.Port))
	case a.Proto != 0:
		parts = append(parts, "meta l4proto "+ProtoName(a.Proto))
	}
	parts = append(parts, "counter", "accept")
	return strings.Join(parts, " ")
}
