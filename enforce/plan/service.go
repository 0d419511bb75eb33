package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/egresskit/egress/store"
)

// Principals: who an allow-list element is for.
const (
	// MatchUser: one allow-list per user (uid . daddr . l4proto . dport),
	// as before services.
	MatchUser = "user"
	// MatchService: one allow-list per service (the socket's cgroup v2 at
	// the unit's level . daddr . l4proto . dport), whatever its user.
	MatchService = "service"
	// MatchUserService: one allow-list per service and user (cgroup .
	// uid . daddr . l4proto . dport).
	MatchUserService = "user,service"
)

// ParseMatch accepts user, service, or user,service (in either order).
func ParseMatch(s string) (string, error) {
	parts := strings.Split(strings.ReplaceAll(strings.ToLower(s), " ", ""), ",")
	slices.Sort(parts)
	switch strings.Join(parts, ",") {
	case "", "user":
		return MatchUser, nil
	case "service":
		return MatchService, nil
	case "service,user":
		return MatchUserService, nil
	}
	return "", fmt.Errorf("match %q is not user, service or user,service", s)
}

// Service sets: the learned flows of services, keyed by the socket's
// cgroup v2 (its ancestor at the service's level).
const (
	SetService4 = "svc4"
	SetService6 = "svc6"
	// MaxServiceLevel bounds how deep a service's cgroup may be (nft's
	// socket cgroupv2 level is at most 255; real layouts stay shallow).
	MaxServiceLevel = 16
	// maxServicePath bounds a service's path: it becomes an nft string.
	maxServicePath = 200
)

// ServiceOf is the service of a cgroup v2 path (relative to the cgroup2
// mount, as the learner records it): the path cut after its first
// *.service or *.scope component (systemd units, docker and podman
// containers, kubepods); with depth > 0 and no such component, its first
// depth components. "" for the root cgroup, an unknown cgroup
// ("cgroup-id:N"), a path too shallow for depth, or a path nft could not
// be given (see ValidServicePath).
func ServiceOf(cgroup string, depth int) string {
	if !strings.HasPrefix(cgroup, "/") {
		return "" // cgroup-id:N, or nothing recorded
	}
	parts := strings.Split(strings.Trim(cgroup, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		return ""
	}
	cut := 0
	for i, c := range parts {
		if strings.HasSuffix(c, ".service") || strings.HasSuffix(c, ".scope") {
			cut = i + 1
			break
		}
	}
	if cut == 0 && depth > 0 && len(parts) >= depth {
		cut = depth
	}
	if cut == 0 {
		return ""
	}
	s := strings.Join(parts[:cut], "/")
	if ValidServicePath(s) != nil {
		return ""
	}
	return s
}

// ValidServicePath checks a service's cgroup path before it reaches nft
// text (in quotes, where nft has no escapes): components of letters,
// digits and ._@:+-, not . or .., at most MaxServiceLevel of them.
func ValidServicePath(s string) error {
	parts := strings.Split(s, "/")
	ok := s != "" && len(s) <= maxServicePath && len(parts) <= MaxServiceLevel
	for _, c := range parts {
		ok = ok && c != "" && c != "." && c != ".."
		for _, r := range c {
			ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@:+-", r))
		}
	}
	if !ok {
		return fmt.Errorf("cgroup path %q is not a service path nft can be given (letters, digits, ._@:+- in at most %d components)", s, MaxServiceLevel)
	}
	return nil
}

// ServiceLevel is the cgroup level of a service path: its number of
// components (system.slice/a.service is at level 2).
func ServiceLevel(s string) int { return strings.Count(s, "/") + 1 }

// ByService reports whether the plan has per-service sets.
func (p *Plan) ByService() bool { return p.Match == MatchService || p.Match == MatchUserService }

// services are the distinct services of a flow's cgroups, and whether
// some of its cgroups have none (the root, an unknown cgroup, or no
// cgroup recorded at all): that part of the flow stays per user.
func services(f *store.Flow, depth int) (svcs []string, user bool) {
	for _, c := range f.Cgroups {
		if s := ServiceOf(c, depth); s == "" {
			user = true
		} else if !slices.Contains(svcs, s) {
			svcs = append(svcs, s)
		}
	}
	return svcs, user || len(f.Cgroups) == 0
}

// serviceOnly reports whether, under a service match, every cgroup the
// flow was seen from is a service's: nothing of it stays per user.
func (b *builder) serviceOnly(f *store.Flow) bool {
	if b.o.Match != MatchService && b.o.Match != MatchUserService {
		return false
	}
	_, user := services(f, b.o.ServiceDepth)
	return !user
}

// addService puts a flow's element in the service sets, once for each of
// its services; it reports whether the flow still needs a per-user
// element.
func (b *builder) addService(f *store.Flow, e Element) bool {
	if b.o.Match != MatchService && b.o.Match != MatchUserService {
		return true
	}
	svcs, user := services(f, b.o.ServiceDepth)
	for _, s := range svcs {
		se := e
		se.Service, se.AnyUser = s, b.o.Match == MatchService
		if f.IP.Is4() {
			b.svc4.Elements = append(b.svc4.Elements, se)
		} else {
			b.svc6.Elements = append(b.svc6.Elements, se)
		}
	}
	return user
}

// finishServices sorts the service sets, merges the elements of one key
// (several users of one service under match service), and adds one
// lookup rule per family and service level.
func (b *builder) finishServices() []Rule {
	if !b.p.ByService() {
		return nil
	}
	levels := map[int]bool{}
	for _, s := range []*Set{&b.svc4, &b.svc6} {
		slices.SortFunc(s.Elements, compareService)
		s.Elements = slices.CompactFunc(s.Elements, func(a, b Element) bool { return a.Key() == b.Key() })
		s.Comment = serviceSetComment(len(s.Elements))
		for _, e := range s.Elements {
			levels[ServiceLevel(e.Service)] = true
		}
	}
	b.p.Sets = append(b.p.Sets, b.svc4, b.svc6)
	var rules []Rule
	for _, fam := range []int{4, 6} {
		for _, l := range slices.Sorted(mapKeys(levels)) {
			set := SetService4
			if fam == 6 {
				set = SetService6
			}
			rules = append(rules, Rule{Kind: RuleServiceLookup, Set: set, Family: fam, Level: l,
				Comment: fmt.Sprintf("learned ipv%d flows of services at cgroup level %d", fam, l)})
		}
	}
	return rules
}

func mapKeys(m map[int]bool) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func compareService(a, b Element) int {
	return cmp.Or(strings.Compare(a.Service, b.Service), a.flowKey().Compare(b.flowKey()))
}

func serviceSetComment(n int) string { return fmt.Sprintf("learned flows of services: %d", n) }

// IsServiceSet reports whether a set name is one of the service sets.
func IsServiceSet(name string) bool { return name == SetService4 || name == SetService6 }

// serviceKey is the key of a service element, the service's path first
// (relative to the cgroup2 mount; root is what the text puts before it).
func (e Element) serviceKey(root string) string {
	path := e.Service
	if root != "" {
		path = root + "/" + path
	}
	k := strconv.Quote(path) + " . "
	if !e.AnyUser {
		k += strconv.FormatUint(uint64(e.UID), 10) + " . "
	}
	return k + addrText(e.IP) + " . " + ProtoName(e.Proto) + " . " + strconv.Itoa(int(e.Port))
}

// Running is the plan as the kernel can hold it now: the elements of the
// services whose cgroup exists (running says which), the others listed
// in Stopped. A service that is not running has no cgroup, so no id and
// no element; the follower adds them when it starts.
func (p *Plan) Running(running func(service string) bool) *Plan {
	if !p.ByService() {
		return p
	}
	q := *p
	q.Sets = slices.Clone(p.Sets)
	q.Stopped = nil
	q.runningStage(running)
	stopped := map[string]bool{}
	for i := range q.Sets {
		s := &q.Sets[i]
		if !IsServiceSet(s.Name) {
			continue
		}
		s.Capacity = s.Size()
		s.Elements = slices.DeleteFunc(slices.Clone(s.Elements), func(e Element) bool {
			if stopped[e.Service] {
				return true
			}
			if !running(e.Service) {
				stopped[e.Service] = true
				q.Stopped = append(q.Stopped, e.Service)
				return true
			}
			return false
		})
		s.Comment = serviceSetComment(len(s.Elements))
	}
	slices.Sort(q.Stopped)
	q.Stopped = slices.Compact(q.Stopped)
	return &q
}

// Services lists the plan's services, sorted, with how many elements
// each has.
func (p *Plan) Services() map[string]int {
	out := map[string]int{}
	for _, s := range p.Sets {
		if IsServiceSet(s.Name) {
			for _, e := range s.Elements {
				out[e.Service]++
			}
		}
	}
	return out
}

// serviceLookupText is the statement of a service lookup rule.
func (p *Plan) serviceLookupText(r *Rule) string {
	ip := "ip"
	if r.Family == 6 {
		ip = "ip6"
	}
	uid := "meta skuid . "
	if p.Match == MatchService {
		uid = ""
	}
	return fmt.Sprintf("socket cgroupv2 level %d . %s%s daddr . meta l4proto . th dport @%s counter accept", r.Level, uid, ip, r.Set)
}

// serviceSetType is the type line of a service set.
func (p *Plan) serviceSetType(family int) string {
	ip := "ipv4_addr"
	if family == 6 {
		ip = "ipv6_addr"
	}
	if p.Match == MatchService {
		return "cgroupsv2 . " + ip + " . inet_proto . inet_service"
	}
	return "cgroupsv2 . uid . " + ip + " . inet_proto . inet_service"
}
