//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// DNS policy (dns_policy: audit or enforce). Attached to a cgroup v2
// directory as cgroup_skb/egress, with a pinned link: it keeps working
// when the process that attached it is gone.
//
// Every DNS query a socket of the cgroup sends in the enforced network
// namespace (UDP to port 53; TCP to port 53, each segment that carries
// data holding whole length-prefixed messages only) is parsed: one
// question, opcode QUERY, no answer or authority records, at most one
// additional record (EDNS); a name of plain labels (no compression
// pointer, no dot or NUL inside a label, at most 253 characters). The
// name is lowered and hashed (FNV-1a 64 of "a.b.c", no trailing dot) and
// looked up for the socket's uid and for every user (uid 0xffffffff):
// the name itself, then "*.suffix" for each of its last MAX_SUFFIX
// labels' suffixes (the hash is seeded with a secret). A query that is not allowed, or that cannot be
// parsed, is counted and reported to user space with its uid and name;
// in enforce it is dropped (return 0), in audit it passes.
//
// What a query cannot hide behind: case (lowered), a trailing dot (none
// in the wire format), compression pointers (refused), several questions
// or records (refused), a query split over TCP segments (refused), IPv6
// extension headers (walked), IPv4 fragments that are not the first
// (raw sockets only: refused in enforce).

#include "common.h"
#include <linux/tcp.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define QBUF 512 // bytes of a DNS message copied: header and question; a power of two
#define QMASK (QBUF - 1)
#define NAME_BUF 256
#define MAX_TEXT 253 // characters of a name in text form
#define MAX_SUFFIX 8 // wildcard suffixes tried: "*.b.c" for the last 8 labels; a power of two
#define MAX_LABELS ((MAX_TEXT + 1) / 2 + 1) // calls of name_label: 127 labels and the final zero
#define MAX_TCP_MSGS 4 // DNS messages in one TCP segment (glibc writes A and AAAA at once)
#define ALL_UIDS 0xffffffffU

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

enum dp_stat {
	DP_QUERIES = 0,     // queries checked
	DP_ALLOWED = 1,     // allowed by the list
	DP_DENIED = 2,      // not allowed: dropped (enforce)
	DP_AUDITED = 3,     // not allowed: passed (audit)
	DP_MALFORMED = 4,   // could not be parsed (dropped in enforce)
	DP_LOST = 5,        // reports user space could not be given (ring full)
	DP_MAX = 6,
};

enum dp_reason {
	DR_NOT_ALLOWED = 1,
	DR_MALFORMED = 2,
};

// Set by the loader.
volatile const __u32 enforce = 1;     // 0: audit
volatile const __u64 netns_cookie = 0; // the enforced namespace
// hash_seed replaces FNV's offset basis: random at each load, so nobody
// outside can compute a name's hash, and so craft a name whose hash is an
// allowed one's (FNV is no cryptographic hash).
volatile const __u64 hash_seed = FNV_OFFSET;

struct allow_key {
	__u32 uid; // ALL_UIDS: every user
	__u32 _pad;
	__u64 hash; // of the name, or of "*.suffix"
};

// dns_denial is what user space hears of a query that was not allowed.
struct dns_denial {
	__u64 ts; // bpf_ktime_get_boot_ns
	__u32 uid;
	__u8 dropped; // 1: enforce dropped it; 0: audit let it pass
	__u8 reason;  // enum dp_reason
	__u8 proto;   // IPPROTO_UDP or IPPROTO_TCP
	__u8 family;  // 4 or 6
	__u16 qtype;
	__u16 len; // characters in name
	__u8 daddr[16];
	char name[NAME_BUF]; // lower case, as far as it could be read
};

const struct dns_denial *unused_dns_denial __attribute__((unused));
const struct allow_key *unused_allow_key __attribute__((unused));

// dns_allow is sized by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct allow_key);
	__type(value, __u8);
} dns_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dns_policy_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} dns_denials SEC(".maps");

// qwalk is the state of the walk over a question name.
struct qwalk {
	__u32 pos;    // in data
	__u32 n;      // bytes in data
	__u32 labels;
	__u32 tlen;   // characters in text
	__s32 done;   // 1: at the end of the name; -1: malformed
	__u16 qtype;  // set by check_msg when it could read the name
	__u16 _pad;
	__u64 h;      // hash of the text so far
	__u32 starts[MAX_SUFFIX]; // text offset of label i, at i % MAX_SUFFIX
};

struct dscratch {
	__u8 data[QBUF];
	char text[NAME_BUF];
	struct qwalk w;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dscratch);
} dns_scratch SEC(".maps");

static __always_inline struct dscratch *dscratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&dns_scratch, &zero);
}

// opaque hides a value from the compiler, so it keeps the bounds masks
// on indexes it could otherwise prove (the verifier cannot).
#define opaque(v) asm volatile("" : "+r"(v))

static __always_inline __u8 dlower(__u8 c)
{
	if (c >= 'A' && c <= 'Z')
		return c + ('a' - 'A');
	return c;
}

// wctx is what the bpf_loop callbacks get: the scratch buffer, looked
// up once by the program (the verifier knows the pointer it reads back).
struct wctx {
	struct dscratch *s;
};

// name_label takes one label of the question name (its length byte and
// characters, lowered into text and hashed), or the final zero.
static long name_label(__u32 i, void *ctx)
{
	struct dscratch *s = ((struct wctx *)ctx)->s;
	struct qwalk *w = &s->w;
	__u32 pos = w->pos;
	if (pos >= w->n || pos >= QBUF) {
		w->done = -1;
		return 1;
	}
	__u32 c = s->data[pos & QMASK];
	pos++;
	if (c == 0) {
		w->pos = pos;
		w->done = 1;
		return 1;
	}
	if (c & 0xc0) { // a compression pointer (or a reserved label type)
		w->done = -1;
		return 1;
	}
	__u32 t = w->tlen;
	__u64 h = w->h;
	if (w->labels > 0) {
		s->text[t & (NAME_BUF - 1)] = '.';
		h = (h ^ '.') * FNV_PRIME;
		t++;
	}
	if (t + c > MAX_TEXT) {
		w->done = -1;
		return 1;
	}
	w->starts[w->labels & (MAX_SUFFIX - 1)] = t;
	w->labels++;
	// The label's characters that are in data: all of them, or the
	// label is cut short (malformed, with the text as far as it went).
	__u32 lim = w->n - pos; // pos <= n: pos - 1 < n
	if (lim > c)
		lim = c;
	// pos + lim <= n <= QBUF and t + c <= MAX_TEXT: the masks change
	// nothing, they show the verifier both pointers stay in the value.
	const __u8 *src = s->data + (pos & QMASK);
	char *dst = s->text + (t & (NAME_BUF - 1));
	for (__u32 k = 0; k < 63; k++) {
		if (k >= lim)
			break;
		__u8 ch = dlower(src[k]);
		if (ch == '.' || ch == 0) { // would make another name in text
			w->tlen = t + k;
			w->done = -1;
			return 1;
		}
		dst[k] = ch;
		h = (h ^ ch) * FNV_PRIME;
	}
	w->tlen = t + lim;
	w->h = h;
	if (lim < c) {
		w->done = -1;
		return 1;
	}
	w->pos = pos + c;
	return 0;
}

// hash_text hashes on from h the text from p to end: a plain loop (in a
// bpf_loop callback the verifier would follow each bound of p apart).
static __always_inline __u64 hash_text(struct dscratch *s, __u32 p, __u32 end, __u64 h)
{
	for (__u32 k = 0; k < NAME_BUF; k++) {
		__u32 q = p + k;
		if (q >= end || q >= NAME_BUF)
			break;
		opaque(q); // keeps the mask the verifier needs
		h = (h ^ (__u8)s->text[q & (NAME_BUF - 1)]) * FNV_PRIME;
	}
	return h;
}

static __always_inline int allowed_hash(__u32 uid, __u64 h)
{
	struct allow_key k = {.uid = uid, .hash = h};
	if (bpf_map_lookup_elem(&dns_allow, &k))
		return 1;
	k.uid = ALL_UIDS;
	return bpf_map_lookup_elem(&dns_allow, &k) != 0;
}

// allowed looks the walked name up: itself, then "*." and each suffix of
// its last MAX_SUFFIX labels, longest first.
static __always_inline int allowed(struct dscratch *s, __u32 uid)
{
	if (allowed_hash(uid, s->w.h))
		return 1;
	__u32 labels = s->w.labels;
	// The suffix from label j has labels-j labels; starts[] holds the
	// last MAX_SUFFIX labels' offsets.
	__u32 first = labels > MAX_SUFFIX ? labels - MAX_SUFFIX : 1;
	for (__u32 i = 0; i < MAX_SUFFIX; i++) {
		__u32 j = first + i;
		if (j >= labels)
			break;
		__u64 h = hash_seed;
		h = (h ^ '*') * FNV_PRIME;
		h = (h ^ '.') * FNV_PRIME;
		h = hash_text(s, s->w.starts[j & (MAX_SUFFIX - 1)], s->w.tlen, h);
		if (allowed_hash(uid, h))
			return 1;
	}
	return 0;
}

static __always_inline __u16 drd16(struct dscratch *s, __u32 p)
{
	return ((__u16)s->data[p & QMASK] << 8) | s->data[(p + 1) & QMASK];
}

// check_msg parses the DNS query in s->data[0:n] and decides on it.
// Returns 1 (allowed), 0 (not allowed), -1 (malformed). s->w.qtype is
// set when the name could be read. A global function: the verifier checks
// it once, not at each of its call sites (UDP, and each TCP message).
__noinline int check_msg(struct dscratch *s, __u32 n, __u32 uid)
{
	if (!s)
		return -1;
	s->w.tlen = 0;
	s->w.labels = 0;
	if (n < 12 + 5)
		return -1;
	__u16 flags = drd16(s, 2);
	if ((flags & 0x8000) || ((flags >> 11) & 0xf) != 0) // a response, or not a QUERY
		return -1;
	if (drd16(s, 4) != 1 || drd16(s, 6) != 0 || drd16(s, 8) != 0 || drd16(s, 10) > 1)
		return -1;
	s->w.pos = 12;
	s->w.n = n;
	s->w.done = 0;
	s->w.h = hash_seed;
	// A label takes one call and at least two characters of text (with
	// its dot), the final zero one call.
	struct wctx x = {.s = s};
	bpf_loop(MAX_LABELS, name_label, &x, 0);
	if (s->w.done != 1)
		return -1;
	__u32 end = s->w.pos;
	if (end + 4 > n)
		return -1;
	s->w.qtype = drd16(s, end);
	return allowed(s, uid);
}

static __always_inline void dcount(__u32 idx)
{
	bump(&dns_policy_stats, idx);
}

// report tells user space about a query that was not allowed.
static __always_inline void report(struct dscratch *s, __u32 uid, int verdict, __u16 qtype, __u8 proto,
				   __u8 family, __u8 daddr[16])
{
	struct dns_denial *e = bpf_ringbuf_reserve(&dns_denials, sizeof(*e), 0);
	if (!e) {
		dcount(DP_LOST);
		return;
	}
	e->ts = bpf_ktime_get_boot_ns();
	e->uid = uid;
	e->dropped = enforce ? 1 : 0;
	e->reason = verdict < 0 ? DR_MALFORMED : DR_NOT_ALLOWED;
	e->proto = proto;
	e->family = family;
	e->qtype = qtype;
	__u32 len = s->w.tlen;
	e->len = len < NAME_BUF ? len : NAME_BUF - 1;
	__builtin_memcpy(e->daddr, daddr, 16);
	__builtin_memcpy(e->name, s->text, NAME_BUF);
	bpf_ringbuf_submit(e, 0);
}

// judge counts and reports a verdict; it returns what the program returns.
static __always_inline int judge(struct dscratch *s, int verdict, __u32 uid, __u16 qtype, __u8 proto,
				 __u8 family, __u8 daddr[16])
{
	if (verdict == 1) {
		dcount(DP_ALLOWED);
		return 1;
	}
	dcount(verdict < 0 ? DP_MALFORMED : (enforce ? DP_DENIED : DP_AUDITED));
	report(s, uid, verdict, qtype, proto, family, daddr);
	return enforce ? 0 : 1;
}

// copy_msg copies n bytes (at most QBUF) of the packet at off.
static __always_inline __u32 copy_msg(struct __sk_buff *skb, struct dscratch *s, __u32 off, __u64 n)
{
	if (n == 0)
		return 0;
	if (n > QBUF)
		n = QBUF;
	n = ((n - 1) & (QBUF - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, s->data, n) < 0)
		return 0;
	return n;
}

// check_tcp judges a TCP segment to port 53: every message it carries
// must be whole and allowed.
static __always_inline int check_tcp(struct __sk_buff *skb, struct dscratch *s, __u32 off, __u32 uid,
				     __u8 family, __u8 daddr[16])
{
	struct tcphdr th;
	if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)) < 0)
		return judge(s, -1, uid, 0, IPPROTO_TCP, family, daddr);
	if (th.dest != bpf_htons(DNS_PORT))
		return 1;
	__u32 p = off + th.doff * 4;
	if (p >= skb->len)
		return 1; // no data: handshake, acknowledgement, end
	__u32 left = skb->len - p;
	s->w.qtype = 0;
	for (int i = 0; i < MAX_TCP_MSGS; i++) {
		__u16 ml;
		s->w.tlen = 0;
		if (left < 2 || bpf_skb_load_bytes(skb, p, &ml, 2) < 0)
			return judge(s, -1, uid, 0, IPPROTO_TCP, family, daddr);
		ml = bpf_ntohs(ml);
		if ((__u32)ml + 2 > left || ml > QBUF) // split over segments, or too long for a query
			return judge(s, -1, uid, 0, IPPROTO_TCP, family, daddr);
		__u32 n = copy_msg(skb, s, p + 2, ml);
		int v = n == ml ? check_msg(s, n, uid) : -1;
		if (v != 1)
			return judge(s, v, uid, s->w.qtype, IPPROTO_TCP, family, daddr);
		dcount(DP_QUERIES);
		left -= (__u32)ml + 2;
		p += (__u32)ml + 2;
		if (left == 0) {
			dcount(DP_ALLOWED);
			return 1;
		}
	}
	return judge(s, -1, uid, 0, IPPROTO_TCP, family, daddr);
}

// fast_udp reads the IP and UDP headers straight from the packet's linear
// data in the two common cases l4_hdr would read the same way: IPv4
// without options and not a later fragment, IPv6 without extension
// headers. It returns 1 when it found a UDP header there, 0 when the
// packet is left to l4_hdr (anything else, or headers not in the linear
// data).
static __always_inline int fast_udp(struct __sk_buff *skb, __u8 *family, __u32 *off, struct udphdr *udp,
				    __u8 daddr[16])
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + 1 > end)
		return 0;
	__u8 v = *(__u8 *)data;
	if (v == 0x45) { // IPv4, a 20-byte header
		struct iphdr *ip = data;
		if ((void *)ip + sizeof(*ip) + sizeof(*udp) > end || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x1fff)))
			return 0;
		*family = 4;
		*off = sizeof(*ip);
		__builtin_memcpy(daddr, &ip->daddr, 4);
		__builtin_memcpy(udp, (void *)ip + sizeof(*ip), sizeof(*udp));
		return 1;
	}
	if ((v >> 4) == 6) {
		struct ipv6hdr *ip6 = data;
		if ((void *)ip6 + sizeof(*ip6) + sizeof(*udp) > end || ip6->nexthdr != IPPROTO_UDP)
			return 0;
		*family = 6;
		*off = sizeof(*ip6);
		__builtin_memcpy(daddr, &ip6->daddr, 16);
		__builtin_memcpy(udp, (void *)ip6 + sizeof(*ip6), sizeof(*udp));
		return 1;
	}
	return 0;
}

SEC("cgroup_skb/egress")
int dns_policy(struct __sk_buff *skb)
{
	if (bpf_get_netns_cookie(skb) != netns_cookie)
		return 1;
	__u8 family = 0, proto = IPPROTO_UDP, daddr[16] = {};
	__u32 off = 0;
	struct udphdr udp;
	int fast = fast_udp(skb, &family, &off, &udp, daddr);
	if (fast && udp.dest != bpf_htons(DNS_PORT))
		return 1; // most packets: UDP, not DNS
	struct dscratch *s = dscratch();
	if (!s)
		return enforce ? 0 : 1;
	__u32 uid = bpf_get_socket_uid(skb);
	s->w.tlen = 0;
	if (!fast) {
		if (l4_hdr(skb, &family, &proto, &off, 0, daddr) < 0)
			return judge(s, -1, uid, 0, 0, family, daddr);
		if (proto == IPPROTO_TCP)
			return check_tcp(skb, s, off, uid, family, daddr);
		if (proto != IPPROTO_UDP)
			return 1;
		if (bpf_skb_load_bytes(skb, off, &udp, sizeof(udp)) < 0)
			return judge(s, -1, uid, 0, IPPROTO_UDP, family, daddr);
		if (udp.dest != bpf_htons(DNS_PORT))
			return 1;
	}
	dcount(DP_QUERIES);
	__u32 ulen = bpf_ntohs(udp.len);
	__u32 n = ulen > sizeof(udp) ? copy_msg(skb, s, off + sizeof(udp), ulen - sizeof(udp)) : 0;
	s->w.qtype = 0;
	int v = n ? check_msg(s, n, uid) : -1;
	return judge(s, v, uid, s->w.qtype, IPPROTO_UDP, family, daddr);
}
