//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// DNS following. Attached to a cgroup v2 directory, these programs let the
// first connection to a just-resolved address through, without racing the
// user-space follower that adds the address to the nftables sets:
//
//  - egress: every UDP datagram to port 53 (a DNS query) is remembered by
//    (socket cookie, query id) with the hash of its question name;
//  - ingress: a DNS answer is used only if it comes from a configured
//    resolver, from port 53, to a socket that sent a query with that id and
//    question. If a name rule allows the receiving socket's UID that name,
//    every A and AAAA record of the answer authorizes (uid, address,
//    protocol, port) for a short window, in a map, before the datagram is
//    queued to the socket: the application cannot read the answer before
//    the authorization exists. The answer then goes to user space, which
//    adds the addresses to the nftables timeout sets for their TTL.
//  - connect4/connect6 (and sendmsg): a socket connecting to an authorized
//    destination gets the follow bit in its mark (SO_MARK); the table
//    accepts packets with that bit. Any other connect clears the bit.
//
// Every ignored answer is counted by reason. Nothing here blocks anything.

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define SOL_SOCKET 1
#define SO_MARK 36

// SCRATCH is the largest DNS message parsed; a power of two.
#define SCRATCH 4096
#define MASK (SCRATCH - 1)
#define MAX_NAME 256 // bytes walked for one name
#define MAX_ANSWERS 16
#define MAX_PORTS 8
#define MAX_SUFFIXES 4 // wildcard levels: "*.a.b" matches x.a.b .. w.x.y.z.a.b

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

enum follow_stat {
	FS_QUERIES = 0,       // queries remembered
	FS_ACCEPTED = 1,      // answers used
	FS_NOT_RESOLVER = 2,  // from an address that is not a configured resolver
	FS_NO_QUERY = 3,      // no query with that id from that socket
	FS_MISMATCH = 4,      // the question differs from the query's
	FS_MALFORMED = 5,     // could not be parsed
	FS_NO_RULE = 6,       // no name rule for this user and name
	FS_AUTHORIZED = 7,    // (uid, address, protocol, port) authorized
	FS_MARKED = 8,        // connects marked
	FS_LOST = 9,          // answers user space could not be told about
	FS_MAX = 10,
};

// Set by the loader.
volatile const __u32 follow_mark = 0x10000000;
volatile const __u64 window_ns = 30000000000ULL; // authorization lifetime
volatile const __u64 floor_ns = 300000000000ULL; // TTL floor

struct query_key {
	__u64 cookie;
	__u16 id;
	__u8 _pad[6];
};

struct query_val {
	__u64 qhash;
	__u64 ts;
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

struct follow_event {
	__u64 ts;
	__u64 cookie;
	__u64 hash; // the rule matched
	__u32 uid;
	__u16 len;
	__u16 orig_len;
	__u8 family;
	__u8 _pad[7];
	__u8 saddr[16];
	__u8 data[SCRATCH];
};

const struct follow_event *unused_follow_event __attribute__((unused));
const struct auth_key *unused_auth_key __attribute__((unused));
const struct rule_key *unused_rule_key __attribute__((unused));
const struct rule_val *unused_rule_val __attribute__((unused));
const struct resolver_key *unused_resolver_key __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct query_key);
	__type(value, struct query_val);
} queries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} follow_stats SEC(".maps");

enum { WALK_HASH = 0, WALK_SKIP = 1 };

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
	__u32 mode;
};

// answers is the state of the walk over an answer's records.
struct answers {
	__u32 pos;
	__u32 n;
	__u32 ancount;
	__u32 uid;
	__u32 nports;
	__u32 _pad;
	__u64 now;
	__u64 hash;
	struct port_rule ports[MAX_PORTS];
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
	__uint(max_entries, 2 << 20);
} follow_events SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&follow_stats, &idx);
	if (v)
		*v += 1;
}

// udp_payload finds the UDP header of an IPv4 or IPv6 datagram.
static __always_inline int udp_payload(struct __sk_buff *skb, __u8 *family, __u32 *l4off,
				       struct udphdr *udp, __u8 saddr[16])
{
	__u8 vbyte;
	if (bpf_skb_load_bytes(skb, 0, &vbyte, 1) < 0)
		return -1;
	if ((vbyte >> 4) == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(0x1fff)))
			return -1;
		*family = 4;
		*l4off = ip.ihl * 4;
		if (saddr) {
			__builtin_memset(saddr, 0, 16);
			__builtin_memcpy(saddr, &ip.saddr, 4);
		}
	} else if ((vbyte >> 4) == 6) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		if (ip6.nexthdr != IPPROTO_UDP)
			return -1;
		*family = 6;
		*l4off = sizeof(ip6);
		if (saddr)
			__builtin_memcpy(saddr, &ip6.saddr, 16);
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, *l4off, udp, sizeof(*udp)) < 0)
		return -1;
	return 0;
}

// load copies the UDP payload into the per-CPU scratch buffer; it returns
// the bytes copied (0 on failure) and the payload length.
static __always_inline __u32 load(struct __sk_buff *skb, __u32 l4off, struct udphdr *udp,
				  struct scratch **out, __u32 *plen)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	__u64 n = bpf_ntohs(udp->len);
	if (n <= sizeof(*udp) + 12)
		return 0;
	n -= sizeof(*udp);
	*plen = n;
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

// walk_byte takes one byte of a name: a label length or a character
// (WALK_HASH), or one whole label (WALK_SKIP).
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
	if (w->mode == WALK_SKIP) {
		if (c == 0) {
			w->done = 1;
			return 1;
		}
		if ((c & 0xc0) == 0xc0) { // a compression pointer ends the name
			w->pos = pos + 1;
			w->done = 1;
			return 1;
		}
		if (c & 0xc0) {
			w->done = -1;
			return 1;
		}
		w->pos = pos + c;
		return 0;
	}
	if (w->rem > 0) {
		w->h = (w->h ^ lower(c)) * FNV_PRIME;
		w->rem--;
		return 0;
	}
	if (c == 0) {
		w->done = 1;
		return 1;
	}
	if (c & 0xc0) { // compression is not expected in a question
		w->done = -1;
		return 1;
	}
	if (w->labels > 0)
		w->h = (w->h ^ '.') * FNV_PRIME;
	__u32 l = w->labels;
	if (l <= MAX_SUFFIXES)
		w->starts[l] = pos - 1;
	w->labels = l + 1;
	w->rem = c;
	return 0;
}

// hash_name hashes the uncompressed name at pos (lower case, labels joined
// by dots, no trailing dot), starting from h, into s->w.h, and records in
// s->w where the first labels start. Returns -1 for a compressed or
// malformed name.
static __always_inline int hash_name(struct scratch *s, __u32 n, __u32 pos, __u64 h)
{
	s->w.pos = pos;
	s->w.n = n;
	s->w.h = h;
	s->w.rem = 0;
	s->w.labels = 0;
	s->w.mode = WALK_HASH;
	s->w.done = 0;
	bpf_loop(MAX_NAME, walk_byte, 0, 0);
	return s->w.done == 1 ? 0 : -1;
}

// skip_name moves s->w.pos past a possibly compressed name at pos.
static __always_inline int skip_name(struct scratch *s, __u32 n, __u32 pos)
{
	s->w.pos = pos;
	s->w.n = n;
	s->w.mode = WALK_SKIP;
	s->w.done = 0;
	bpf_loop(MAX_NAME / 2, walk_byte, 0, 0);
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

// egress_dns_query remembers DNS queries: (cookie, id) -> question hash.
SEC("cgroup_skb/egress")
int follow_query(struct __sk_buff *skb)
{
	__u8 family;
	__u32 l4off, plen;
	struct udphdr udp;
	if (udp_payload(skb, &family, &l4off, &udp, 0) < 0 || udp.dest != bpf_htons(53))
		return 1;
	struct scratch *s = 0;
	__u32 n = load(skb, l4off, &udp, &s, &plen);
	if (!n || !s)
		return 1;
	if (s->data[2] & 0x80) // a response
		return 1;
	__u16 id = rd16(s, 0);
	if (hash_name(s, n, 12, FNV_OFFSET) < 0)
		return 1;
	struct query_key qk = {.cookie = bpf_get_socket_cookie(skb), .id = id};
	struct query_val qv = {.qhash = s->w.h, .ts = bpf_ktime_get_boot_ns()};
	bpf_map_update_elem(&queries, &qk, &qv, BPF_ANY);
	count(FS_QUERIES);
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

// answer_record authorizes the address of one A or AAAA record.
static long answer_record(__u32 i, void *ctx)
{
	struct scratch *s = scratch_buf();
	if (!s)
		return 1;
	struct answers *a = &s->a;
	if (i >= a->ancount)
		return 1;
	if (skip_name(s, a->n, a->pos) < 0)
		return 1;
	__u32 pos = s->w.pos;
	if (pos + 10 > a->n || pos >= SCRATCH)
		return 1;
	__u16 type = rd16(s, pos), class = rd16(s, pos + 2);
	__u32 ttl = rd32(s, pos + 4);
	__u16 rdlen = rd16(s, pos + 8);
	pos += 10;
	if (pos + rdlen > a->n)
		return 1;
	a->pos = pos + rdlen;
	struct auth_key ak = {.uid = a->uid};
	if (class == 1 && type == 1 && rdlen == 4) {
		ak.family = 4;
		for (int b = 0; b < 4; b++)
			ak.addr[b] = s->data[(pos + b) & MASK];
	} else if (class == 1 && type == 28 && rdlen == 16) {
		ak.family = 6;
		for (int b = 0; b < 16; b++)
			ak.addr[b] = s->data[(pos + b) & MASK];
	} else {
		return 0; // CNAME and others: the addresses follow
	}
	__u64 life = (__u64)ttl * 1000000000ULL;
	if (life < floor_ns)
		life = floor_ns;
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
	return 0;
}

SEC("cgroup_skb/ingress")
int follow_answer(struct __sk_buff *skb)
{
	__u8 family;
	__u32 l4off, plen;
	struct udphdr udp;
	struct resolver_key rk = {};
	if (udp_payload(skb, &family, &l4off, &udp, rk.addr) < 0 || udp.source != bpf_htons(53))
		return 1;
	rk.family = family;
	if (!bpf_map_lookup_elem(&resolvers, &rk)) {
		count(FS_NOT_RESOLVER);
		return 1;
	}
	struct scratch *s = 0;
	__u32 n = load(skb, l4off, &udp, &s, &plen);
	if (!n || !s) {
		count(FS_MALFORMED);
		return 1;
	}
	if (!(s->data[2] & 0x80) || rd16(s, 4) != 1) { // not a response, or not one question
		count(FS_MALFORMED);
		return 1;
	}
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct query_key qk = {.cookie = cookie, .id = rd16(s, 0)};
	struct query_val *qv = bpf_map_lookup_elem(&queries, &qk);
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
	bpf_map_delete_elem(&queries, &qk); // one answer a query: no replay
	__u32 qend = s->w.pos, labels = s->w.labels;
	__u32 starts[MAX_SUFFIXES + 1];
	__builtin_memcpy(starts, s->w.starts, sizeof(starts));

	__u32 uid = bpf_get_socket_uid(skb);
	struct rule_key key = {.uid = uid, .hash = qhash};
	struct rule_val *rule = bpf_map_lookup_elem(&rules, &key);
	for (int i = 1; i <= MAX_SUFFIXES && !rule; i++) {
		if ((__u32)i >= labels)
			break;
		key.hash = suffix_hash(s, n, starts[i]);
		rule = bpf_map_lookup_elem(&rules, &key);
	}
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
	s->a.hash = key.hash;
	s->a.nports = rule->nports;
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
	e->hash = key.hash;
	e->uid = uid;
	e->family = family;
	e->orig_len = plen;
	__builtin_memcpy(e->saddr, rk.addr, 16);
	__u64 cn = n;
	cn = ((cn - 1) & MASK) + 1;
	if (bpf_skb_load_bytes(skb, l4off + sizeof(udp), e->data, cn) < 0) {
		bpf_ringbuf_discard(e, 0);
		count(FS_LOST);
		return 1;
	}
	e->len = cn;
	bpf_ringbuf_submit(e, 0);
	return 1;
}

// mark sets or clears the follow bit of the socket's mark.
static __always_inline void mark(struct bpf_sock_addr *ctx, struct auth_key *ak)
{
	struct auth_val *av = bpf_map_lookup_elem(&authorized, ak);
	int on = av && av->expires > bpf_ktime_get_boot_ns();
	__u32 m = 0;
	if (bpf_getsockopt(ctx, SOL_SOCKET, SO_MARK, &m, sizeof(m)) < 0)
		return;
	__u32 want = on ? (m | follow_mark) : (m & ~follow_mark);
	if (want == m)
		return;
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
