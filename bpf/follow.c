//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// DNS following. Attached to a cgroup v2 directory, these programs let the
// first connection to a just-resolved address through, without racing the
// user-space follower that adds the address to the nftables sets, and
// without making the socket mark a credential:
//
//  - egress, first: a packet carrying the follow bit in its mark, in the
//    enforced network namespace, is dropped unless its socket was marked
//    by connect4/connect6 below for exactly this uid, destination,
//    protocol and port (socket storage). A mark a process set itself
//    (SO_MARK needs only CAP_NET_RAW), or a mark kept by a UDP socket that
//    sends elsewhere, passes nothing. nftables runs before this hook: the
//    table may have accepted the packet, this program drops it. A TCP
//    socket past SYN_SENT is not checked: its packets are replies to, or
//    follow, a handshake the table already judged, and it cannot change
//    its destination.
//  - egress, then: every UDP datagram to port 53 (a DNS query) of a user
//    with name rules, in the enforced namespace, is remembered by (socket
//    cookie, query id) with the hash of its question name, in that user's
//    own share of the query table;
//  - ingress: a DNS answer is used only in the enforced namespace, from a
//    configured resolver, from port 53, to a socket that sent a query with
//    that id and question. If a name rule allows the receiving socket's
//    UID that name, each A and AAAA record whose owner is the question or a
//    name its CNAME chain leads to authorizes (uid, address, protocol,
//    port) for a short window, in a map, before the datagram is queued to
//    the socket: the application cannot read the answer before the
//    authorization exists. User space hears of the addresses authorized
//    and adds them to the nftables timeout sets.
//    Each TCP destination is also put in the name check's view
//    (followed, below) first: the name check checks the name even the
//    first connection presents.
//  - egress, last: a packet that may be a DNS query (dns_candidate) is
//    passed on by a tail call to the DNS policy (dnspolicy.c's dns_policy)
//    when user space put it in dns_policy_slot: its return is then the
//    packet's verdict, and the policy runs inside this program, with no
//    program of its own on the hook. An empty slot passes the packet.
//  - connect4/connect6: a socket of the enforced namespace connecting to
//    an authorized destination gets the follow bit in its mark (SO_MARK)
//    and the destination in its socket storage; any other connect clears
//    both.
//
// Every ignored answer is counted by reason.

#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define SOL_SOCKET 1
#define SO_MARK 36
#define SOCK_STREAM 1
#define E2BIG 7

// SCRATCH is the largest DNS message parsed; a power of two.
#define SCRATCH 4096
#define MASK (SCRATCH - 1)
#define MAX_WALK 320 // bytes and pointers walked for one name
#define MAX_NAME 255 // characters of a name
#define MAX_ANSWERS 32
#define MAX_CHAIN 8 // names of a CNAME chain, the question included; a power of two
#define MAX_PORTS 8
#define MAX_SUFFIXES 4 // wildcard levels: "*.a.b" matches x.a.b .. w.x.y.z.a.b

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

enum follow_stat {
	FS_QUERIES = 0,        // queries remembered
	FS_ACCEPTED = 1,       // answers used
	FS_NOT_RESOLVER = 2,   // from an address that is not a configured resolver
	FS_NO_QUERY = 3,       // no query with that id from that socket
	FS_MISMATCH = 4,       // the question differs from the query's
	FS_MALFORMED = 5,      // could not be parsed
	FS_NO_RULE = 6,        // no name rule for this user and name
	FS_AUTHORIZED = 7,     // (uid, address, protocol, port) authorized
	FS_MARKED = 8,         // connects marked
	FS_LOST = 9,           // answers user space could not be told about
	FS_OTHER_NETNS = 10,   // answers received in another network namespace
	FS_OWNER = 11,         // address records whose owner is not the question's chain
	FS_OVER_SHARE = 12,    // queries not remembered: the user's share is full
	FS_MARK_DROPPED = 13,  // packets with the follow bit no authorization covers
	FS_FOLLOWED_FULL = 14, // addresses not authorized: the name check's view is full
	FS_MAX = 15,
};

// Set by the loader.
volatile const __u32 follow_mark = 0x10000000;
volatile const __u64 window_ns = 30000000000ULL;  // authorization lifetime
volatile const __u64 floor_ns = 300000000000ULL;  // TTL floor
volatile const __u64 ttl_max_ns = 3600000000000ULL; // TTL cap
volatile const __u64 netns_cookie = 0;            // the enforced namespace

struct query_key {
	__u64 cookie;
	__u16 id;
	__u8 _pad[6];
};

struct query_val {
	__u64 qhash;
	__u64 ts; // bpf_ktime_get_boot_ns
};

struct rule_key {
	__u32 uid;
	__u32 _pad;
	__u64 hash; // of the name, or of "*.suffix"
};

struct port_rule {
	__u8 proto;
	__u8 _pad;
	__u16 port; // host byte order
};

struct rule_val {
	__u32 nports;
	struct port_rule ports[MAX_PORTS];
};

// auth_key is an authorized destination; also what a marked socket's
// storage holds.
struct auth_key {
	__u32 uid;
	__u16 port; // host byte order
	__u8 family; // 4 or 6
	__u8 proto;
	__u8 addr[16];
};

struct auth_val {
	__u64 expires; // bpf_ktime_get_boot_ns
	__u64 hash; // the rule's name hash
};

struct resolver_key {
	__u8 family;
	__u8 _pad[3];
	__u8 addr[16];
};

struct follow_addr {
	__u8 family; // 4 or 6
	__u8 _pad[3];
	__u32 ttl; // seconds, as the answer gave it
	__u8 addr[16];
};

// follow_event tells user space which addresses an answer authorized.
struct follow_event {
	__u64 ts;
	__u64 cookie;
	__u64 hash; // the rule matched
	__u32 uid;
	__u32 naddrs;
	struct follow_addr addrs[MAX_ANSWERS];
};

const struct follow_event *unused_follow_event __attribute__((unused));
const struct auth_key *unused_auth_key __attribute__((unused));
const struct rule_key *unused_rule_key __attribute__((unused));
const struct rule_val *unused_rule_val __attribute__((unused));
const struct resolver_key *unused_resolver_key __attribute__((unused));
const struct query_key *unused_query_key __attribute__((unused));
const struct query_val *unused_query_val __attribute__((unused));

// queries holds, for each user with name rules, a table of its own of
// the queries waiting for an answer: a user filling its share (the inner
// map's size, set by the loader) loses only its own queries. User space
// creates the inner maps and removes the queries nobody answered.
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 1024);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__type(key, struct query_key);
		__type(value, struct query_val);
	});
} queries SEC(".maps");

// rules is sized by the loader from the plan.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rule_key);
	__type(value, struct rule_val);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct resolver_key);
	__type(value, __u8);
} resolvers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct auth_key);
	__type(value, struct auth_val);
} authorized SEC(".maps");

// followed is the name check's view of the followed TCP destinations
// (uid, address, protocol, port) -> until when the answer lets the
// follow sets hold them (boot ns). The name check (namecheck.c) checks
// the name every connection to them presents. Written here before the
// answer is queued to the socket, so even the first connection is
// checked; user space removes the entries the sets no longer hold. Pinned
// in the follower's directory, which the name check shares.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FOLLOWED_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct auth_key);
	__type(value, __u64);
} followed SEC(".maps");

// sockauth is the destination a marked socket was authorized for. It
// lives and dies with the socket; user space pins the map, so a restarted
// follower keeps recognizing the sockets marked before.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct auth_key);
} sockauth SEC(".maps");

// dns_policy_slot holds, in slot 0, the DNS policy's program (dnspolicy.c)
// when the policy runs inside the follower: follow_egress passes it the
// packets that may be DNS queries by a tail call. Pinned in the
// follower's directory: the kernel empties a program array when its last
// reference from user space goes, and a follower that dies must leave the
// policy running.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} dns_policy_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} follow_stats SEC(".maps");

// walk is the state of a walk over a name. It lives in the scratch map,
// not on the stack: the verifier does not track map contents, so the
// bpf_loop callbacks below are verified once instead of once per byte.
struct walk {
	__u32 pos;
	__u32 n;
	__u32 rem;
	__u32 labels;
	__u64 h;
	__u32 starts[MAX_SUFFIXES + 1];
	__s32 done; // 1: at the end of the name, -1: malformed
	__u32 end; // where the name ends in the record (after its first pointer)
	__u32 low; // compression pointers must point below this
	__u32 chars;
	__u32 jumped;
};

// answers is the state of the walk over an answer's records.
struct answers {
	__u32 pos;
	__u32 n;
	__u32 ancount;
	__u32 uid;
	__u32 nports;
	__u32 nchain;
	__u32 naddrs;
	__u32 _pad;
	__u64 now;
	__u64 hash;
	__u64 chain[MAX_CHAIN]; // hashes of the question and its CNAME targets
	struct port_rule ports[MAX_PORTS];
	struct follow_addr addrs[MAX_ANSWERS];
};

struct scratch {
	__u8 data[SCRATCH];
	struct walk w;
	struct answers a;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} follow_events SEC(".maps");

static __always_inline void count(__u32 idx)
{
	bump(&follow_stats, idx);
}

// packet_dest reads the destination, transport protocol (past IPv6
// extension headers) and destination port of a packet into ak (not its
// uid).
static __always_inline int packet_dest(struct __sk_buff *skb, struct auth_key *ak)
{
	__u32 l4off;
	if (l4_hdr(skb, &ak->family, &ak->proto, &l4off, 0, ak->addr) < 0)
		return -1;
	__u16 ports[2];
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) < 0)
		return -1;
	ak->port = bpf_ntohs(ports[1]);
	return 0;
}

// mark_allowed says whether a packet carrying the follow bit may leave.
static __always_inline int mark_allowed(struct __sk_buff *skb)
{
	if (bpf_get_netns_cookie(skb) != netns_cookie)
		return 1; // another namespace: not our table, not our mark
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1; // request and time-wait sockets: replies of judged connections
	if (sk->type == SOCK_STREAM && sk->protocol == IPPROTO_TCP && sk->state != BPF_TCP_SYN_SENT)
		return 1;
	struct auth_key *a = bpf_sk_storage_get(&sockauth, sk, 0, 0);
	if (!a)
		return 0;
	struct auth_key p = {};
	if (packet_dest(skb, &p) < 0)
		return 0;
	if (p.family != a->family || p.proto != a->proto || p.port != a->port)
		return 0;
	if (bpf_get_socket_uid(skb) != a->uid)
		return 0;
	__u32 *x = (__u32 *)p.addr, *y = (__u32 *)a->addr;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

// load copies the UDP payload into the per-CPU scratch buffer; it returns
// the bytes copied (0 on failure).
static __always_inline __u32 load(struct __sk_buff *skb, __u32 l4off, struct udphdr *udp,
				  struct scratch **out)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	__u64 n = bpf_ntohs(udp->len);
	if (n <= sizeof(*udp) + 12)
		return 0;
	n -= sizeof(*udp);
	if (n > SCRATCH)
		n = SCRATCH;
	n = ((n - 1) & (SCRATCH - 1)) + 1;
	if (bpf_skb_load_bytes(skb, l4off + sizeof(*udp), s->data, n) < 0)
		return 0;
	*out = s;
	return n;
}

static __always_inline __u8 lower(__u8 c)
{
	if (c >= 'A' && c <= 'Z')
		return c + ('a' - 'A');
	return c;
}

static __always_inline struct scratch *scratch_buf(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

// walk_byte takes one byte of a name: a label length, a character, the
// final zero or a compression pointer. A pointer must point below every
// position the walk has started from, so a name cannot loop.
static long walk_byte(__u32 i, void *ctx)
{
	struct scratch *s = scratch_buf();
	if (!s)
		return 1;
	struct walk *w = &s->w;
	__u32 pos = w->pos;
	if (pos >= w->n || pos >= SCRATCH) {
		w->done = -1;
		return 1;
	}
	__u8 c = s->data[pos & MASK];
	pos++;
	w->pos = pos;
	if (w->rem > 0) {
		w->h = (w->h ^ lower(c)) * FNV_PRIME;
		w->rem--;
		return 0;
	}
	if (c == 0) {
		if (!w->jumped)
			w->end = pos;
		w->done = 1;
		return 1;
	}
	if ((c & 0xc0) == 0xc0) {
		if (pos >= w->n) {
			w->done = -1;
			return 1;
		}
		__u32 target = ((__u32)(c & 0x3f) << 8) | s->data[pos & MASK];
		if (!w->jumped)
			w->end = pos + 1;
		w->jumped = 1;
		if (target >= w->low) {
			w->done = -1;
			return 1;
		}
		w->low = target;
		w->pos = target;
		return 0;
	}
	if (c & 0xc0) {
		w->done = -1;
		return 1;
	}
	if (w->labels > 0)
		w->h = (w->h ^ '.') * FNV_PRIME;
	w->chars += c + 1;
	if (w->chars > MAX_NAME) {
		w->done = -1;
		return 1;
	}
	__u32 l = w->labels;
	if (l <= MAX_SUFFIXES)
		w->starts[l] = pos - 1;
	w->labels = l + 1;
	w->rem = c;
	return 0;
}

// hash_name hashes the name at pos, following compression pointers
// (lower case, labels joined by dots, no trailing dot), starting from h,
// into s->w.h; s->w.end is where the name ends in its record, and s->w
// records where the first labels start. Returns -1 for a malformed name.
static __always_inline int hash_name(struct scratch *s, __u32 n, __u32 pos, __u64 h)
{
	s->w.pos = pos;
	s->w.n = n;
	s->w.h = h;
	s->w.rem = 0;
	s->w.labels = 0;
	s->w.done = 0;
	s->w.end = 0;
	s->w.low = pos;
	s->w.chars = 0;
	s->w.jumped = 0;
	bpf_loop(MAX_WALK, walk_byte, 0, 0);
	return s->w.done == 1 ? 0 : -1;
}

static __always_inline __u16 rd16(struct scratch *s, __u32 p)
{
	return ((__u16)s->data[p & MASK] << 8) | s->data[(p + 1) & MASK];
}

static __always_inline __u32 rd32(struct scratch *s, __u32 p)
{
	return ((__u32)rd16(s, p) << 16) | rd16(s, p + 2);
}

// ports_dns tells whether the transport header at l4 (TCP or UDP) goes
// to port 53; 1 when it is not in the linear data.
static __always_inline int ports_dns(void *l4, void *end)
{
	struct udphdr *udp = l4; // the destination port is where TCP has it
	if ((void *)(udp + 1) > end)
		return 1;
	return udp->dest == bpf_htons(DNS_PORT);
}

// dns_candidate tells, from the packet's linear data without a helper
// call, that it cannot be a DNS query the policy would judge (0): a TCP
// or UDP packet to another port than 53, another transport protocol. 1
// for anything else: a UDP or TCP packet to port 53, headers not in the
// linear data, a later IPv4 fragment, IPv6 extension headers, a packet
// that is not IP (the policy judges those: some it refuses). It keeps the
// cost for all other packets low.
static __always_inline int dns_candidate(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + 1 > end)
		return 1;
	__u8 v = *(__u8 *)data >> 4;
	if (v == 4) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > end || ip->ihl < 5 || (ip->frag_off & bpf_htons(0x1fff)))
			return 1;
		if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP)
			return 0;
		return ports_dns(data + ip->ihl * 4, end);
	}
	if (v == 6) {
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > end)
			return 1;
		if (ip6->nexthdr != IPPROTO_UDP && ip6->nexthdr != IPPROTO_TCP)
			return ip6_ext(ip6->nexthdr);
		return ports_dns(ip6 + 1, end);
	}
	return 1;
}

// remember_query remembers a DNS query: (cookie, id) -> question hash, in
// the sending user's share.
static __always_inline void remember_query(struct __sk_buff *skb)
{
	__u8 family;
	__u32 l4off;
	struct udphdr udp;
	if (udp_hdr(skb, &family, &l4off, &udp, 0) < 0 || udp.dest != bpf_htons(DNS_PORT))
		return;
	if (bpf_get_netns_cookie(skb) != netns_cookie)
		return;
	__u32 uid = bpf_get_socket_uid(skb);
	void *share = bpf_map_lookup_elem(&queries, &uid);
	if (!share)
		return; // no name rule for this user
	struct scratch *s = 0;
	__u32 n = load(skb, l4off, &udp, &s);
	if (!n || !s)
		return;
	if (s->data[2] & 0x80) // a response
		return;
	__u16 id = rd16(s, 0);
	if (hash_name(s, n, 12, FNV_OFFSET) < 0)
		return;
	struct query_key qk = {.cookie = bpf_get_socket_cookie(skb), .id = id};
	struct query_val qv = {.qhash = s->w.h, .ts = bpf_ktime_get_boot_ns()};
	if (bpf_map_update_elem(share, &qk, &qv, BPF_ANY) == -E2BIG) {
		count(FS_OVER_SHARE);
		return;
	}
	count(FS_QUERIES);
}

SEC("cgroup_skb/egress")
int follow_egress(struct __sk_buff *skb)
{
	if ((skb->mark & follow_mark) && !mark_allowed(skb)) {
		count(FS_MARK_DROPPED);
		return 0;
	}
	if (!dns_candidate(skb))
		return 1;
	remember_query(skb);
	// The DNS policy, when it is in the slot: its return is the verdict.
	bpf_tail_call(skb, &dns_policy_slot, 0);
	return 1;
}

// suffix_hash hashes "*." followed by the name from label start p.
static __always_inline __u64 suffix_hash(struct scratch *s, __u32 n, __u32 p)
{
	__u64 h = FNV_OFFSET;
	h = (h ^ '*') * FNV_PRIME;
	h = (h ^ '.') * FNV_PRIME;
	if (hash_name(s, n, p, h) < 0)
		return 0;
	return s->w.h;
}

static __always_inline int in_chain(struct answers *a, __u64 h)
{
	__u32 nchain = a->nchain;
	for (int i = 0; i < MAX_CHAIN; i++) {
		if ((__u32)i >= nchain)
			break;
		if (a->chain[i] == h)
			return 1;
	}
	return 0;
}

// name_checked puts the address's TCP destinations in the name check's
// view until the sets let them go; -1 when the view is full (the address
// is then not authorized at all: no connection to it goes unchecked).
static __always_inline int name_checked(struct answers *a, struct auth_key *ak, __u64 until)
{
	__u32 nports = a->nports;
	for (int p = 0; p < MAX_PORTS; p++) {
		if ((__u32)p >= nports)
			break;
		if (a->ports[p].proto != IPPROTO_TCP)
			continue;
		ak->proto = IPPROTO_TCP;
		ak->port = a->ports[p].port;
		if (bpf_map_update_elem(&followed, ak, &until, BPF_ANY) < 0) {
			count(FS_FOLLOWED_FULL);
			return -1;
		}
	}
	return 0;
}

// authorize allows (uid, address, protocol, port) for the rule's ports and
// notes the address for user space.
static __always_inline void authorize(struct scratch *s, struct follow_addr *fa)
{
	struct answers *a = &s->a;
	struct auth_key ak = {.uid = a->uid, .family = fa->family};
	__builtin_memcpy(ak.addr, fa->addr, 16);
	__u64 life = (__u64)fa->ttl * 1000000000ULL;
	if (life < floor_ns)
		life = floor_ns;
	if (life > ttl_max_ns)
		life = ttl_max_ns;
	if (name_checked(a, &ak, a->now + life) < 0)
		return;
	if (life > window_ns)
		life = window_ns;
	struct auth_val av = {.expires = a->now + life, .hash = a->hash};
	__u32 nports = a->nports;
	for (int p = 0; p < MAX_PORTS; p++) {
		if ((__u32)p >= nports)
			break;
		ak.proto = a->ports[p].proto;
		ak.port = a->ports[p].port;
		bpf_map_update_elem(&authorized, &ak, &av, BPF_ANY);
		count(FS_AUTHORIZED);
	}
	__u32 k = a->naddrs;
	if (k < MAX_ANSWERS) {
		a->addrs[k & (MAX_ANSWERS - 1)] = *fa;
		a->naddrs = k + 1;
	}
}

// answer_record takes one record of the answer section: a CNAME of a name
// of the chain extends the chain, an A or AAAA record of a name of the
// chain authorizes its address; anything else is passed over.
static long answer_record(__u32 i, void *ctx)
{
	struct scratch *s = scratch_buf();
	if (!s)
		return 1;
	struct answers *a = &s->a;
	if (i >= a->ancount)
		return 1;
	if (hash_name(s, a->n, a->pos, FNV_OFFSET) < 0)
		return 1;
	__u64 owner = s->w.h;
	__u32 pos = s->w.end;
	if (pos + 10 > a->n || pos >= SCRATCH)
		return 1;
	__u16 type = rd16(s, pos), class = rd16(s, pos + 2);
	__u32 ttl = rd32(s, pos + 4);
	__u16 rdlen = rd16(s, pos + 8);
	pos += 10;
	if (pos + rdlen > a->n)
		return 1;
	a->pos = pos + rdlen;
	if (class != 1)
		return 0;
	int ours = in_chain(a, owner);
	if (type == 5) { // CNAME
		if (!ours || hash_name(s, a->n, pos, FNV_OFFSET) < 0)
			return 0;
		__u32 c = a->nchain;
		if (c < MAX_CHAIN) {
			a->chain[c & (MAX_CHAIN - 1)] = s->w.h;
			a->nchain = c + 1;
		}
		return 0;
	}
	struct follow_addr fa = {.ttl = ttl};
	if (type == 1 && rdlen == 4) {
		fa.family = 4;
		for (int b = 0; b < 4; b++)
			fa.addr[b] = s->data[(pos + b) & MASK];
	} else if (type == 28 && rdlen == 16) {
		fa.family = 6;
		for (int b = 0; b < 16; b++)
			fa.addr[b] = s->data[(pos + b) & MASK];
	} else {
		return 0;
	}
	if (!ours) {
		count(FS_OWNER);
		return 0;
	}
	authorize(s, &fa);
	return 0;
}

// check_answer runs the checks every answer must pass before its question
// is even looked up; it returns the payload length, or 0.
static __always_inline __u32 check_answer(struct __sk_buff *skb, struct scratch **s, __u8 *family)
{
	__u32 l4off;
	struct udphdr udp;
	struct resolver_key rk = {};
	if (udp_hdr(skb, family, &l4off, &udp, rk.addr) < 0 || udp.source != bpf_htons(DNS_PORT))
		return 0;
	if (bpf_get_netns_cookie(skb) != netns_cookie) {
		count(FS_OTHER_NETNS);
		return 0;
	}
	rk.family = *family;
	if (!bpf_map_lookup_elem(&resolvers, &rk)) {
		count(FS_NOT_RESOLVER);
		return 0;
	}
	__u32 n = load(skb, l4off, &udp, s);
	if (!n || !*s || !((*s)->data[2] & 0x80) || rd16(*s, 4) != 1) { // not a response, or not one question
		count(FS_MALFORMED);
		return 0;
	}
	return n;
}

// match_rule finds the name rule of uid for the question (its name, or a
// wildcard over it), starting from the question's hash in s->w.
static __always_inline struct rule_val *match_rule(struct scratch *s, __u32 n, __u32 uid, __u64 *hash)
{
	__u32 labels = s->w.labels;
	__u32 starts[MAX_SUFFIXES + 1];
	__builtin_memcpy(starts, s->w.starts, sizeof(starts));
	struct rule_key key = {.uid = uid, .hash = s->w.h};
	struct rule_val *rule = bpf_map_lookup_elem(&rules, &key);
	for (int i = 1; i <= MAX_SUFFIXES && !rule; i++) {
		if ((__u32)i >= labels)
			break;
		key.hash = suffix_hash(s, n, starts[i]);
		rule = bpf_map_lookup_elem(&rules, &key);
	}
	*hash = key.hash;
	return rule;
}

SEC("cgroup_skb/ingress")
int follow_answer(struct __sk_buff *skb)
{
	__u8 family;
	struct scratch *s = 0;
	__u32 n = check_answer(skb, &s, &family);
	if (!n || !s)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 uid = bpf_get_socket_uid(skb);
	void *share = bpf_map_lookup_elem(&queries, &uid);
	if (!share) {
		count(FS_NO_RULE); // no name rule for this user
		return 1;
	}
	struct query_key qk = {.cookie = cookie, .id = rd16(s, 0)};
	struct query_val *qv = bpf_map_lookup_elem(share, &qk);
	if (!qv) {
		count(FS_NO_QUERY);
		return 1;
	}
	if (hash_name(s, n, 12, FNV_OFFSET) < 0) {
		count(FS_MALFORMED);
		return 1;
	}
	__u64 qhash = s->w.h;
	if (qhash != qv->qhash) {
		count(FS_MISMATCH);
		return 1;
	}
	bpf_map_delete_elem(share, &qk); // one answer a query: no replay
	__u32 qend = s->w.end;
	__u64 hash;
	struct rule_val *rule = match_rule(s, n, uid, &hash);
	if (!rule) {
		count(FS_NO_RULE);
		return 1;
	}
	__u64 now = bpf_ktime_get_boot_ns();
	s->a.pos = qend + 4; // qtype, qclass
	s->a.n = n;
	s->a.ancount = rd16(s, 6);
	s->a.uid = uid;
	s->a.now = now;
	s->a.hash = hash;
	s->a.nports = rule->nports;
	s->a.nchain = 1;
	s->a.chain[0] = qhash;
	s->a.naddrs = 0;
	__builtin_memcpy(s->a.ports, rule->ports, sizeof(s->a.ports));
	bpf_loop(MAX_ANSWERS, answer_record, 0, 0);
	count(FS_ACCEPTED);

	// Tell user space, which adds the addresses to the nftables sets.
	struct follow_event *e = bpf_ringbuf_reserve(&follow_events, sizeof(*e), 0);
	if (!e) {
		count(FS_LOST);
		return 1;
	}
	e->ts = now;
	e->cookie = cookie;
	e->hash = hash;
	e->uid = uid;
	e->naddrs = s->a.naddrs;
	__builtin_memcpy(e->addrs, s->a.addrs, sizeof(e->addrs));
	bpf_ringbuf_submit(e, 0);
	return 1;
}

// mark sets the follow bit in the socket's mark, and its destination in
// the socket's storage, when the destination is authorized; it clears
// both otherwise. Sockets of other namespaces are left alone.
static __always_inline void mark(struct bpf_sock_addr *ctx, struct auth_key *ak)
{
	if (bpf_get_netns_cookie(ctx) != netns_cookie)
		return;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct auth_val *av = bpf_map_lookup_elem(&authorized, ak);
	int on = av && av->expires > bpf_ktime_get_boot_ns();
	if (on) {
		struct auth_key *st = bpf_sk_storage_get(&sockauth, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st)
			*st = *ak;
		else
			on = 0;
	} else {
		bpf_sk_storage_delete(&sockauth, sk);
	}
	__u32 m = 0;
	if (bpf_getsockopt(ctx, SOL_SOCKET, SO_MARK, &m, sizeof(m)) < 0)
		return;
	__u32 want = on ? (m | follow_mark) : (m & ~follow_mark);
	if (want != m)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_MARK, &want, sizeof(want));
	if (on)
		count(FS_MARKED);
}

static __always_inline void key4(struct bpf_sock_addr *ctx, struct auth_key *ak)
{
	__u32 ip4 = ctx->user_ip4;
	ak->family = 4;
	__builtin_memcpy(ak->addr, &ip4, 4);
}

static __always_inline void key6(struct bpf_sock_addr *ctx, struct auth_key *ak)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		ak->family = 4;
		__builtin_memcpy(ak->addr, &w3, 4);
		return;
	}
	ak->family = 6;
	__builtin_memcpy(ak->addr, &w0, 4);
	__builtin_memcpy(ak->addr + 4, &w1, 4);
	__builtin_memcpy(ak->addr + 8, &w2, 4);
	__builtin_memcpy(ak->addr + 12, &w3, 4);
}

static __always_inline void fill(struct bpf_sock_addr *ctx, struct auth_key *ak)
{
	ak->uid = (__u32)bpf_get_current_uid_gid();
	ak->proto = ctx->protocol;
	ak->port = bpf_ntohs((__u16)ctx->user_port);
}

SEC("cgroup/connect4")
int follow_connect4(struct bpf_sock_addr *ctx)
{
	struct auth_key ak = {};
	fill(ctx, &ak);
	key4(ctx, &ak);
	mark(ctx, &ak);
	return 1;
}

SEC("cgroup/connect6")
int follow_connect6(struct bpf_sock_addr *ctx)
{
	struct auth_key ak = {};
	fill(ctx, &ak);
	key6(ctx, &ak);
	mark(ctx, &ak);
	return 1;
}
