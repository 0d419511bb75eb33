// Package config reads the settings both tools share: a YAML file
// (--config, or /etc/egress/config.yaml when present), EGRESS_* environment
// variables and command-line flags, in rising order of precedence. Unknown
// keys and invalid values are errors that name the key.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// DefaultFile is read when present and no --config is given.
const DefaultFile = "/etc/egress/config.yaml"

// Config holds every setting of both tools.
type Config struct {
	// File is the configuration file that was read, if any.
	File string `mapstructure:"-"`

	DB               string `mapstructure:"db"`
	LogLevel         string `mapstructure:"log_level"`
	Cgroup           string `mapstructure:"cgroup"`
	FlushIntervalS   string `mapstructure:"flush_interval"`
	SummaryIntervalS string `mapstructure:"summary_interval"`
	IgnoreLoopback   bool   `mapstructure:"ignore_loopback"`
	// PresentedNames: the learner records the name each TCP connection
	// presents (TLS SNI, HTTP Host).
	PresentedNames bool `mapstructure:"presented_names"`
	// UDPUnconnected is where the learner counts unconnected UDP
	// datagrams: sendmsg (the cgroup sendmsg4/6 programs, every
	// sendmsg() call) or egress (the egress program, every datagram that
	// leaves; the sendmsg programs are not attached).
	UDPUnconnected   string   `mapstructure:"udp_unconnected"`
	IgnoreUsers      []string `mapstructure:"ignore_users"`
	IgnoreCIDRs      []string `mapstructure:"ignore_cidrs"`
	IgnorePorts      []int    `mapstructure:"ignore_ports"`
	DNSResolverUsers []string `mapstructure:"dns_resolver_users"`

	// egress-learn coverage: where the scheduled jobs are (coverage.go).
	CoverageRoot         string   `mapstructure:"coverage_root"`
	CoverageUnitDirs     []string `mapstructure:"coverage_unit_dirs"`
	CoverageTimerStamps  string   `mapstructure:"coverage_timer_stamps"`
	CoverageCrontab      string   `mapstructure:"coverage_crontab"`
	CoverageCronD        string   `mapstructure:"coverage_cron_d"`
	CoverageAnacrontab   string   `mapstructure:"coverage_anacrontab"`
	CoverageAnacronSpool string   `mapstructure:"coverage_anacron_spool"`
	CoverageUserCrontabs []string `mapstructure:"coverage_user_crontabs"`

	// egress-enforce
	Table        string        `mapstructure:"table"`
	Mode         string        `mapstructure:"mode"`
	Netns        string        `mapstructure:"netns"`
	NFLOGGroup   int           `mapstructure:"nflog_group"`
	AuditLogRate int           `mapstructure:"audit_log_rate"`
	DropLogRate  int           `mapstructure:"drop_log_rate"`
	ResolvConf   string        `mapstructure:"resolv_conf"`
	DNSServers   []string      `mapstructure:"dns_servers"`
	NTPServers   []string      `mapstructure:"ntp_servers"`
	AlwaysAllow  []AllowConfig `mapstructure:"always_allow"`
	MinHits      int           `mapstructure:"min_hits"`
	SinceS       string        `mapstructure:"since"`
	// Match is who learned flows are allowed for: user, service or
	// user,service; ServiceDepth cuts cgroup paths without a *.service or
	// *.scope component into services (0: they stay per user).
	Match        string `mapstructure:"match"`
	ServiceDepth int    `mapstructure:"service_depth"`
	// BootPolicy is what restore does with no generation to put back:
	// open (no table) or closed (DNS, NTP and loopback only).
	BootPolicy string `mapstructure:"boot_policy"`

	// Store bounds (egress-enforce watch and prune).
	RetentionS      string `mapstructure:"retention"`
	KeepGenerations int    `mapstructure:"keep_generations"`

	// DNS following.
	FollowMode       string         `mapstructure:"follow_mode"`
	FollowNames      []FollowConfig `mapstructure:"follow_names"`
	FollowIPOnly     []string       `mapstructure:"follow_ip_only"`
	FollowTTLFloorS  string         `mapstructure:"follow_ttl_floor"`
	FollowTTLMaxS    string         `mapstructure:"follow_ttl_max"`
	FollowMaxPerName int            `mapstructure:"follow_max_per_name"`
	FollowMark       int64          `mapstructure:"follow_mark"`
	FollowWindowS    string         `mapstructure:"follow_window"`

	// DNS policy (dnspolicy.go).
	DNSPolicy   string           `mapstructure:"dns_policy"`
	DNSAllow    []DNSAllowConfig `mapstructure:"dns_allow"`
	DNSMaxNames int              `mapstructure:"dns_max_names"`

	// NameCheck: off, audit or enforce (the name TCP flows present).
	NameCheck string `mapstructure:"name_check"`

	// Resolved by Load from the values above.
	Since           time.Duration  `mapstructure:"-"`
	Retention       time.Duration  `mapstructure:"-"`
	FollowTTLFloor  time.Duration  `mapstructure:"-"`
	FollowTTLMax    time.Duration  `mapstructure:"-"`
	FollowWindow    time.Duration  `mapstructure:"-"`
	FlushInterval   time.Duration  `mapstructure:"-"`
	SummaryInterval time.Duration  `mapstructure:"-"`
	IgnoreUIDs      []uint32       `mapstructure:"-"`
	IgnorePrefixes  []netip.Prefix `mapstructure:"-"`
	IgnorePortList  []uint16       `mapstructure:"-"`
	// DNSResolverUIDs are the UIDs of dns_resolver_users.
	DNSResolverUIDs []uint32 `mapstructure:"-"`
}

// defaults lists every key with its default value; a key not listed here
// is unknown.
var defaults = map[string]any{
	"db":                  store.DefaultPath,
	"log_level":           "info",
	"cgroup":              "",
	"flush_interval":      "5s",
	"summary_interval":    "1m",
	"ignore_loopback":     true,
	"presented_names":     true,
	"udp_unconnected":     UDPUnconnectedSendmsg,
	"ignore_users":        []string{},
	"ignore_cidrs":        []string{},
	"ignore_ports":        []int{},
	"dns_resolver_users":  []string{DefaultResolvers},
	"table":               "egress",
	"mode":                "audit",
	"netns":               "",
	"nflog_group":         100,
	"audit_log_rate":      10,
	"drop_log_rate":       100,
	"retention":           "90d",
	"keep_generations":    50,
	"resolv_conf":         "",
	"dns_servers":         []string{},
	"ntp_servers":         []string{},
	"always_allow":        []map[string]any{},
	"min_hits":            1,
	"since":               "",
	"match":               "user",
	"service_depth":       0,
	"boot_policy":         "open",
	"follow_mode":         "both",
	"follow_names":        []map[string]any{},
	"follow_ip_only":      []string{},
	"follow_ttl_floor":    "5m",
	"follow_ttl_max":      "1h",
	"follow_max_per_name": 64,
	"follow_mark":         0x10000000,
	"follow_window":       "30s",
	"dns_policy":          "off",
	"dns_allow":           []map[string]any{},
	"dns_max_names":       262144,
	"name_check":          "off",

	// egress-learn coverage
	"coverage_root":          "/",
	"coverage_unit_dirs":     []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"},
	"coverage_timer_stamps":  "/var/lib/systemd/timers",
	"coverage_crontab":       "/etc/crontab",
	"coverage_cron_d":        "/etc/cron.d",
	"coverage_anacrontab":    "/etc/anacrontab",
	"coverage_anacron_spool": "/var/spool/anacron",
	"coverage_user_crontabs": []string{"/var/spool/cron/crontabs"},
}

// DefaultResolvers, in dns_resolver_users, stands for those of
// DefaultResolverUsers this host has.
const DefaultResolvers = "default"

// DefaultResolverUsers are the users local DNS resolvers usually run as:
// systemd-resolved, nscd, dnsmasq, unbound, BIND, PowerDNS Recursor, Knot
// Resolver, and root (nscd's default on Debian, dockerd's embedded
// resolver, dnsmasq run with user=root). Root is trusted with everything
// already: it can rewrite the baseline and the table; and since the
// learner takes a socket's UID in the initial user namespace, a user in a
// user namespace of its own cannot pass for root.
var DefaultResolverUsers = []string{
	"root", "systemd-resolve", "systemd-resolved", "nscd", "dnsmasq", "unbound",
	"bind", "named", "pdns", "pdns-recursor", "knot-resolver",
}

// resolverUIDs resolves dns_resolver_users: names or UIDs, and
// DefaultResolvers for those of defaults that exist here (the others are
// left out silently; a name given explicitly must exist).
func resolverUIDs(list, defaults []string) ([]uint32, error) {
	out := []uint32{}
	add := func(uid uint32) {
		if !slices.Contains(out, uid) {
			out = append(out, uid)
		}
	}
	for _, s := range list {
		if strings.TrimSpace(s) == DefaultResolvers {
			for _, d := range defaults {
				if uid, err := LookupUID(d); err == nil {
					add(uid)
				}
			}
			continue
		}
		uid, err := LookupUID(s)
		if err != nil {
			return nil, fmt.Errorf("dns_resolver_users: %w (%q stands for the usual resolver users this host has)", err, DefaultResolvers)
		}
		add(uid)
	}
	return out, nil
}

// FollowConfig is one follow_names entry: a name (a leading "*." allowed)
// whose current addresses a user may reach on a protocol and port.
type FollowConfig struct {
	Name  string `mapstructure:"name"`
	User  string `mapstructure:"user"`
	Proto string `mapstructure:"proto"`
	Port  int    `mapstructure:"port"`
}

// AllowConfig is one always_allow entry of the configuration file.
type AllowConfig struct {
	Proto  string `mapstructure:"proto"`
	Dest   string `mapstructure:"dest"`
	Port   int    `mapstructure:"port"`
	User   string `mapstructure:"user"`
	Reason string `mapstructure:"reason"`
}

// Keys returns every known key, sorted.
func Keys() []string {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Loader gathers flags to bind before Load.
type Loader struct {
	v     *viper.Viper
	flags map[string]string // key -> flag name
}

// NewLoader returns a loader with defaults and the EGRESS_ environment.
func NewLoader() *Loader {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("EGRESS")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return &Loader{v: v, flags: map[string]string{}}
}

// Bind makes the flag named flag (when a command has it and it is set) the
// value of key. Several subcommands may each define that flag.
func (l *Loader) Bind(key, flag string) {
	if _, ok := defaults[key]; !ok {
		panic("config: bind of unknown key " + key)
	}
	l.flags[key] = flag
}

// Load reads file (or DefaultFile when file is "" and it exists, or the
// file named by EGRESS_CONFIG), the environment and the bound flags found
// in flags (the running command's).
func (l *Loader) Load(file string, flags *pflag.FlagSet) (*Config, error) {
	if file == "" {
		file = os.Getenv("EGRESS_CONFIG")
	}
	explicit := file != ""
	if !explicit {
		if _, err := os.Stat(DefaultFile); err == nil {
			file = DefaultFile
		}
	}
	if file != "" {
		if err := l.readFile(file, explicit); err != nil {
			return nil, err
		}
	}
	for key, name := range l.flags {
		f := flags.Lookup(name)
		if f == nil {
			continue
		}
		if err := l.v.BindPFlag(key, f); err != nil {
			return nil, fmt.Errorf("bind flag --%s: %w", name, err)
		}
	}
	var c Config
	errorUnused := func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = true }
	if err := l.v.Unmarshal(&c, errorUnused); err != nil {
		return nil, fmt.Errorf("configuration%s: %s", where(file), flatten(err))
	}
	c.File = file
	if err := c.resolve(); err != nil {
		return nil, fmt.Errorf("configuration%s: %w", where(file), err)
	}
	return &c, nil
}

func where(file string) string {
	if file == "" {
		return ""
	}
	return " " + file
}

func (l *Loader) readFile(file string, explicit bool) error {
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return nil
		}
		return fmt.Errorf("read configuration: %w", err)
	}
	// Check the keys on their own, so an unknown one is named.
	probe := viper.New()
	probe.SetConfigType("yaml")
	if err := probe.ReadConfig(strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("read configuration %s: %w", file, err)
	}
	var unknown []string
	for _, k := range probe.AllKeys() {
		top := strings.SplitN(k, ".", 2)[0]
		if _, ok := defaults[top]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("configuration %s: unknown key(s) %s (known: %s)", file, strings.Join(unknown, ", "), strings.Join(Keys(), ", "))
	}
	l.v.SetConfigType("yaml")
	if err := l.v.ReadConfig(strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("read configuration %s: %w", file, err)
	}
	return nil
}

// flatten turns mapstructure's multi-line error list into one line.
func flatten(err error) string {
	msg := strings.TrimPrefix(err.Error(), "decoding failed due to the following error(s):")
	var parts []string
	for _, line := range strings.Split(msg, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			parts = append(parts, strings.ReplaceAll(line, "'", ""))
		}
	}
	return strings.Join(parts, "; ")
}

// ParseDuration parses a duration setting with an error that names it.
func ParseDuration(key, s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration (examples: 500ms, 5s, 2m, 1h)", key, s)
	}
	return d, nil
}

// ParseDays parses a duration that may also be a number of days ("90d");
// "0" is zero.
func ParseDays(key, s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a number of days or a duration (examples: 90d, 720h)", key, s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is not a number of days or a duration (examples: 90d, 720h)", key, s)
	}
	return d, nil
}

// resolve checks the settings and fills the resolved fields.
func (c *Config) resolve() error {
	if c.DB == "" {
		return errors.New("db: must not be empty")
	}
	for key, v := range map[string]string{"db": c.DB, "netns": c.Netns, "resolv_conf": c.ResolvConf, "cgroup": c.Cgroup} {
		if strings.ContainsFunc(v, unicode.IsControl) {
			return fmt.Errorf("%s: %q holds a control character", key, v)
		}
	}
	for _, step := range []func() error{c.resolveLearn, c.resolveFollow, c.resolveEnforce, c.resolveStore, c.resolveLists, c.resolveDNSPolicy} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// resolveLearn checks the learner's intervals, the log level and since.
func (c *Config) resolveLearn() error {
	var err error
	if c.FlushInterval, err = ParseDuration("flush_interval", c.FlushIntervalS); err != nil {
		return err
	}
	if c.SummaryInterval, err = ParseDuration("summary_interval", c.SummaryIntervalS); err != nil {
		return err
	}
	if c.FlushInterval < 100*time.Millisecond {
		return fmt.Errorf("flush_interval: %s is too short (at least 100ms)", c.FlushInterval)
	}
	if c.SummaryInterval < time.Second {
		return fmt.Errorf("summary_interval: %s is too short (at least 1s)", c.SummaryInterval)
	}
	if c.UDPUnconnected != UDPUnconnectedSendmsg && c.UDPUnconnected != UDPUnconnectedEgress {
		return fmt.Errorf("udp_unconnected: %q is not %s or %s", c.UDPUnconnected, UDPUnconnectedSendmsg, UDPUnconnectedEgress)
	}
	if _, err := c.SlogLevel(); err != nil {
		return err
	}
	if c.SinceS != "" {
		if c.Since, err = ParseDuration("since", c.SinceS); err != nil {
			return err
		}
	}
	return nil
}

// Values of udp_unconnected.
const (
	UDPUnconnectedSendmsg = "sendmsg"
	UDPUnconnectedEgress  = "egress"
)

// resolveFollow checks the settings of DNS following.
func (c *Config) resolveFollow() error {
	switch c.NameCheck {
	case "off", "audit", "enforce":
	default:
		return fmt.Errorf("name_check: %q is not off, audit or enforce", c.NameCheck)
	}
	switch c.FollowMode {
	case "ip", "name", "both":
	default:
		return fmt.Errorf("follow_mode: %q is not ip, name or both", c.FollowMode)
	}
	var err error
	if c.FollowTTLFloor, err = ParseDuration("follow_ttl_floor", c.FollowTTLFloorS); err != nil {
		return err
	}
	if c.FollowWindow, err = ParseDuration("follow_window", c.FollowWindowS); err != nil {
		return err
	}
	if c.FollowTTLMax, err = ParseDuration("follow_ttl_max", c.FollowTTLMaxS); err != nil {
		return err
	}
	if c.FollowTTLFloor < time.Second || c.FollowWindow < time.Second {
		return fmt.Errorf("follow_ttl_floor and follow_window: at least 1s")
	}
	if c.FollowTTLMax < c.FollowTTLFloor {
		return fmt.Errorf("follow_ttl_max: %s is shorter than follow_ttl_floor %s", c.FollowTTLMax, c.FollowTTLFloor)
	}
	if c.FollowMaxPerName < 1 {
		return fmt.Errorf("follow_max_per_name: %d must be at least 1", c.FollowMaxPerName)
	}
	if c.FollowMark <= 0 || c.FollowMark > 0xffffffff || c.FollowMark&(c.FollowMark-1) != 0 {
		return fmt.Errorf("follow_mark: %#x must be one bit of the 32-bit socket mark", c.FollowMark)
	}
	return nil
}

// resolveEnforce checks the table's settings.
func (c *Config) resolveEnforce() error {
	if c.BootPolicy != "open" && c.BootPolicy != "closed" {
		return fmt.Errorf("boot_policy: %q is not open or closed", c.BootPolicy)
	}
	if c.Mode != "audit" && c.Mode != "enforce" {
		return fmt.Errorf("mode: %q is not audit or enforce", c.Mode)
	}
	if err := plan.ValidIdentifier(c.Table); err != nil {
		return fmt.Errorf("table: %w", err)
	}
	m, err := plan.ParseMatch(c.Match)
	if err != nil {
		return fmt.Errorf("match: %w", err)
	}
	c.Match = m
	if c.ServiceDepth < 0 || c.ServiceDepth > plan.MaxServiceLevel {
		return fmt.Errorf("service_depth: %d is not between 0 and %d", c.ServiceDepth, plan.MaxServiceLevel)
	}
	if c.NFLOGGroup < 0 || c.NFLOGGroup > 65535 {
		return fmt.Errorf("nflog_group: %d is not between 0 and 65535", c.NFLOGGroup)
	}
	if c.AuditLogRate < 1 {
		return fmt.Errorf("audit_log_rate: %d must be at least 1 (packets per second)", c.AuditLogRate)
	}
	if c.DropLogRate < 1 {
		return fmt.Errorf("drop_log_rate: %d must be at least 1 (packets per second; every packet is still counted and dropped)", c.DropLogRate)
	}
	return nil
}

// resolveStore checks the store's bounds and min_hits.
func (c *Config) resolveStore() error {
	var err error
	if c.Retention, err = ParseDays("retention", c.RetentionS); err != nil {
		return err
	}
	if c.Retention != 0 && c.Retention < time.Hour {
		return fmt.Errorf("retention: %s is too short (at least 1h, or 0 to keep everything)", c.Retention)
	}
	if c.KeepGenerations < 0 {
		return fmt.Errorf("keep_generations: %d is negative (0 keeps every plan)", c.KeepGenerations)
	}
	if c.MinHits < 0 {
		return fmt.Errorf("min_hits: %d is negative", c.MinHits)
	}
	return nil
}

// resolveLists checks the lists of addresses, users, prefixes and ports.
func (c *Config) resolveLists() error {
	for _, l := range []struct {
		key  string
		list []string
	}{{"dns_servers", c.DNSServers}, {"ntp_servers", c.NTPServers}} {
		for _, a := range l.list {
			if ad, err := netip.ParseAddr(strings.TrimSpace(a)); err != nil || ad.Zone() != "" {
				return fmt.Errorf("%s: %q is not an address (without a zone)", l.key, a)
			}
		}
	}
	c.IgnoreUIDs = nil
	for _, u := range c.IgnoreUsers {
		uid, err := LookupUID(u)
		if err != nil {
			return fmt.Errorf("ignore_users: %w", err)
		}
		c.IgnoreUIDs = append(c.IgnoreUIDs, uid)
	}
	var err error
	if c.DNSResolverUIDs, err = resolverUIDs(c.DNSResolverUsers, DefaultResolverUsers); err != nil {
		return err
	}
	if err := c.checkCoverage(); err != nil {
		return err
	}
	c.IgnorePrefixes = nil
	for _, s := range c.IgnoreCIDRs {
		p, err := ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("ignore_cidrs: %w", err)
		}
		c.IgnorePrefixes = append(c.IgnorePrefixes, p)
	}
	c.IgnorePortList = nil
	for _, p := range c.IgnorePorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("ignore_ports: %d is not a port (1-65535)", p)
		}
		c.IgnorePortList = append(c.IgnorePortList, uint16(p))
	}
	return nil
}

// SlogLevel is log_level as a slog level.
func (c *Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	return l, nil
}

// ParsePrefix accepts a CIDR or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// LookupUID resolves a user name or a numeric UID.
func LookupUID(s string) (uint32, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("unknown user %q", s)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has a non-numeric uid %q", s, u.Uid)
	}
	return uint32(n), nil
}

// UserNames resolves UIDs to user names, caching the answers; unknown
// UIDs are returned as numbers.
type UserNames map[uint32]string

// Name returns the user name of uid, or uid as a number.
func (u UserNames) Name(uid uint32) string {
	if n, ok := u[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if usr, err := user.LookupId(n); err == nil {
		n = usr.Username
	}
	u[uid] = n
	return n
}
