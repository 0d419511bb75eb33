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
// name is lowered and hashed (keyed SipHash-1-3 of its wire form) and
// looked up for the socket's uid and for every user (uid 0xffffffff):
// the name itself, then "*.suffix" for each of its last MAX_SUFFIX
// labels' suffixes. A query that is not allowed, or that cannot be
// parsed, is counted and reported to user space with its uid and name;
// in enforce it is dropped (return 0), in audit it passes.
//
// What a query cannot hide behind: case (lowered), a trailing dot (none
// in the wire format), compression pointers (refused), several questions
// or records (refused), a query split over TCP segments (refused), IPv6
// extension headers (walked), IPv4 fragments that are not the first
// (raw sockets only: refused in enforce).
//
// The allowed path is the common one, and every query pays for it: the
// name is walked once a label at a time (lengths only), then read eight
// bytes at a time, lowered and checked for a dot or NUL inside a label
// without a loop per character, and hashed with SipHash-1-3 under a key
// random at each load. The map key is small (uid, kind, 64-bit hash); an
// exact name is first looked for in dns_allow_fast (an array the verifier
// inlines, no call), the hash map only when it is not there. The text of
// the name is built only for a report.

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
// hash_k0 and hash_k1 are the SipHash key: random at each load, so nobody
// outside can compute a name's hash, and so craft a name whose hash is an
// allowed one's (SipHash is a keyed pseudorandom function).
volatile const __u64 hash_k0 = 0;
volatile const __u64 hash_k1 = 0;

enum allow_kind {
	AK_NAME = 0,   // the name itself
	AK_SUFFIX = 1, // "*." and the name: every name under it
};

struct allow_key {
	__u32 uid;  // ALL_UIDS: every user
	__u32 kind; // enum allow_kind
	__u64 hash; // SipHash-1-3 of the name in wire form, lowered
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

// dns_allow_fast is the exact names of dns_allow again, for the common
// case (an allowed name) without a hash map's lookup: a two-choice
// cuckoo table of buckets of FAST_SLOTS fingerprints, in an array whose
// lookup the verifier inlines (no call: each return costs on a CPU that
// mitigates SRSO). A name's fingerprint for a uid is fast_fp: its
// SipHash, keyed, xor the uid times an odd constant (one name never
// gives two users the same fingerprint), never 0 (an empty slot); it
// sits in bucket fp & fast_mask or (fp >> 32) & fast_mask. Sized and
// filled by the loader before the program is attached. It only ever
// allows what dns_allow allows: a name not found here (a wildcard, or
// one the loader could not place) is looked up in dns_allow as before.
#define FAST_SLOTS 8
#define FAST_MUL 0x9e3779b97f4a7c15ULL

struct allow_bucket {
	__u64 fp[FAST_SLOTS];
};

const struct allow_bucket *unused_allow_bucket __attribute__((unused));

volatile const __u32 fast_mask = 0; // buckets - 1: a power of two less one

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct allow_bucket);
} dns_allow_fast SEC(".maps");

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

// The packet's socket, read from the kernel's sk_buff
// (bpf_cast_to_kern_ctx) through the running kernel's BTF (CO-RE): plain
// loads where bpf_get_netns_cookie and bpf_get_socket_uid are calls. On a
// CPU that mitigates SRSO ("safe RET"), each return of a call is costly;
// those two helpers were a third of the program's time on an allowed query.
#include "kernsock.h"

#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

// pkt_sock is the packet's socket, or NULL.
static __always_inline struct sock *pkt_sock(struct __sk_buff *skb)
{
	struct sk_buff *k = bpf_cast_to_kern_ctx(skb);
	return k->sk;
}

// sock_netns is bpf_get_netns_cookie(skb): the cookie of the socket's
// network namespace.
static __always_inline __u64 sock_netns(struct __sk_buff *skb, struct sock *sk)
{
	if (!sk)
		return bpf_get_netns_cookie(skb);
	return sk->__sk_common.skc_net.net->net_cookie;
}

// sock_uid is bpf_get_socket_uid(skb) of a full socket: its owner's kuid,
// which is the uid in the enforced namespace (one of the initial user
// namespace: Install refuses others). Anything else (no socket, a
// request or time-wait socket) is left to the helper.
static __always_inline __u32 sock_uid(struct __sk_buff *skb, struct sock *sk)
{
	if (!sk)
		return bpf_get_socket_uid(skb);
	__u8 st = sk->__sk_common.skc_state;
	if (st == TCP_TIME_WAIT || st == TCP_NEW_SYN_RECV)
		return bpf_get_socket_uid(skb);
	return sk->sk_uid.val;
}

// qwalk is the state of the walk over a question name.
struct qwalk {
	__u32 pos;    // in data
	__u32 n;      // bytes in data
	__u32 labels;
	__u32 tlen;   // characters in text
	__s32 done;   // 1: at the end of the name; -1: malformed
	__u16 qtype;  // set by check_msg when it could read the name
	__u8 named;   // 1: data holds a message whose name a report may show
	__u8 _pad;
	__u32 hits;   // bytes sip_name saw that are a dot or a NUL
	__u32 starts[MAX_SUFFIX]; // wire offset of label i's length byte, at i % MAX_SUFFIX
};

// dscratch: the walk's state first, then the message, so that a short
// query's header and the state share cache lines.
struct dscratch {
	struct qwalk w;
	__u8 daddr[16]; // for deny
	__u8 data[QBUF + 8]; // + 8: a word read at any offset below QBUF stays in the value
	char text[NAME_BUF + 64]; // + 64: name_label's label copy, as the verifier bounds it, stays in text
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
// characters, lowered into text), or the final zero: for a report, the
// text as far as it could be read.
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
	if (w->labels > 0) {
		s->text[t & (NAME_BUF - 1)] = '.';
		t++;
	}
	if (t + c > MAX_TEXT) {
		w->done = -1;
		return 1;
	}
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
	}
	w->tlen = t + lim;
	if (lim < c) {
		w->done = -1;
		return 1;
	}
	w->pos = pos + c;
	return 0;
}

// name_text fills text (and tlen) with the name of the message in data,
// as far as it can be read: for a report only.
__noinline int name_text(struct dscratch *s)
{
	if (!s)
		return 0;
	s->w.pos = 12;
	s->w.labels = 0;
	s->w.tlen = 0;
	s->w.done = 0;
	struct wctx x = {.s = s};
	bpf_loop(MAX_LABELS, name_label, &x, 0);
	return 0;
}

// Word-at-a-time helpers, on eight bytes of a name read little endian.
#define ONES 0x0101010101010101ULL
#define LOW7 0x7f7f7f7f7f7f7f7fULL
#define HIGH 0x8080808080808080ULL

// lower8 lowers the ASCII capitals of x (the other bytes stay).
static __always_inline __u64 lower8(__u64 x)
{
	__u64 h = x & LOW7;
	__u64 ge_a = h + (0x80 - 'A') * ONES; // high bit: h >= 'A'
	__u64 gt_z = h + (0x7f - 'Z') * ONES; // high bit: h > 'Z'
	return x | ((ge_a & ~gt_z & ~x & HIGH) >> 2);
}

// zeros counts the zero bytes of x.
static __always_inline __u32 zeros(__u64 x)
{
	__u64 y = ~(((x & LOW7) + LOW7) | x | LOW7); // 0x80 in each zero byte
	return (__u32)(((y >> 7) * ONES) >> 56);
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = ROTL(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = ROTL(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = ROTL(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = ROTL(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = ROTL(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = ROTL(v2, 32);                                                                 \
	} while (0)

// sip_inline is SipHash-1-3 (key hash_k0, hash_k1) of the len bytes of
// data from start, lowered: a name in wire form, its final zero included.
// It sets s->w.hits to how many of those bytes are a dot or a NUL.
static __always_inline __u64 sip_inline(struct dscratch *s, __u32 start, __u32 len)
{
	if (!s || len == 0 || len > MAX_TEXT + 2 || start >= QBUF)
		return 0;
	__u64 v0 = hash_k0 ^ 0x736f6d6570736575ULL, v1 = hash_k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = hash_k0 ^ 0x6c7967656e657261ULL, v3 = hash_k1 ^ 0x7465646279746573ULL;
	__u32 hits = 0, full = len / 8;
	for (__u32 k = 0; k < (MAX_TEXT + 2) / 8; k++) {
		if (k >= full)
			break;
		__u32 p = (start + k * 8) & QMASK; // start + len <= n <= QBUF: the mask changes nothing
		__u64 m = lower8(*(__u64 *)(s->data + p));
		hits += zeros(m) + zeros(m ^ ('.' * ONES));
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	__u32 r = len & 7;
	__u64 b = (__u64)len << 56;
	if (r) {
		__u32 p = (start + full * 8) & QMASK;
		__u64 m = lower8(*(__u64 *)(s->data + p)) & ((1ULL << (r * 8)) - 1);
		hits += zeros(m) + zeros(m ^ ('.' * ONES)) - (8 - r); // not the padding
		b |= m;
	}
	s->w.hits = hits;
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

// sip_name is sip_inline as a global function, for the wildcard
// suffixes: the verifier checks it once.
__noinline __u64 sip_name(struct dscratch *s, __u32 start, __u32 len)
{
	return sip_inline(s, start, len);
}

static __always_inline __u64 fast_fp(__u32 uid, __u64 h)
{
	__u64 fp = h ^ ((__u64)uid * FAST_MUL);
	return fp ? fp : 1;
}

static __always_inline int fast_bucket_has(__u32 b, __u64 fp)
{
	struct allow_bucket *k = bpf_map_lookup_elem(&dns_allow_fast, &b);
	if (!k)
		return 0;
	__u64 hit = 0;
	for (int i = 0; i < FAST_SLOTS; i++)
		hit |= k->fp[i] == fp;
	return hit != 0;
}

// fast_has says whether dns_allow_fast holds the name of hash h for uid.
static __always_inline int fast_has(__u32 uid, __u64 h)
{
	__u64 fp = fast_fp(uid, h);
	return fast_bucket_has((__u32)fp & fast_mask, fp) || fast_bucket_has((__u32)(fp >> 32) & fast_mask, fp);
}

static __always_inline int allowed_hash(__u32 uid, __u32 kind, __u64 h)
{
	struct allow_key k = {.uid = uid, .kind = kind, .hash = h};
	if (bpf_map_lookup_elem(&dns_allow, &k))
		return 1;
	k.uid = ALL_UIDS;
	return bpf_map_lookup_elem(&dns_allow, &k) != 0;
}

// walk_labels follows the label lengths of the question name from offset
// 12: it records where the last MAX_SUFFIX labels start and counts the
// labels whose length byte is a dot ('.' = 46). It returns the offset of
// the final zero, or 0 when the name is malformed (cut short, a pointer,
// over MAX_TEXT characters).
static __always_inline __u32 walk_labels(struct dscratch *s, __u32 n, __u32 *dotlens)
{
	__u32 pos = 12, labels = 0, dots = 0;
	for (__u32 i = 0; i < MAX_LABELS; i++) {
		if (pos >= n)
			return 0;
		__u32 q = pos;
		opaque(q); // keeps the mask the verifier needs
		__u32 c = s->data[q & QMASK];
		if (c == 0) {
			s->w.labels = labels;
			*dotlens = dots;
			return pos;
		}
		if (c & 0xc0) // a compression pointer (or a reserved label type)
			return 0;
		dots += c == '.';
		s->w.starts[labels & (MAX_SUFFIX - 1)] = pos;
		labels++;
		pos += c + 1;
		// pos - 12 is the text so far and one: MAX_TEXT at most.
		if (pos > n || pos > 12 + MAX_TEXT + 1)
			return 0;
	}
	return 0;
}

// allowed looks the name that ends at end up: itself, then each suffix
// of its last MAX_SUFFIX labels as a wildcard's. It returns -1 when a
// label holds a dot or a NUL (each dot counted is a length byte, or
// one is inside a label; the one NUL is the final zero).
static __always_inline int allowed(struct dscratch *s, __u32 uid, __u32 end, __u32 dotlens)
{
	__u64 h = sip_inline(s, 12, end + 1 - 12);
	if (s->w.hits != dotlens + 1)
		return -1;
	if (fast_has(uid, h) || fast_has(ALL_UIDS, h))
		return 1;
	if (allowed_hash(uid, AK_NAME, h))
		return 1;
	__u32 labels = s->w.labels;
	__u32 first = labels > MAX_SUFFIX ? labels - MAX_SUFFIX : 1;
	for (__u32 i = 0; i < MAX_SUFFIX; i++) {
		__u32 j = first + i;
		if (j >= labels)
			break;
		__u32 p = s->w.starts[j & (MAX_SUFFIX - 1)];
		if (p > end)
			return 0;
		if (allowed_hash(uid, AK_SUFFIX, sip_name(s, p, end + 1 - p)))
			return 1;
	}
	return 0;
}

static __always_inline __u16 drd16(struct dscratch *s, __u32 p)
{
	return ((__u16)s->data[p & QMASK] << 8) | s->data[(p + 1) & QMASK];
}

// check_inline parses the DNS query in s->data[0:n] and decides on it.
// Returns 1 (allowed), 0 (not allowed), -1 (malformed). s->w.qtype is
// set when the name could be read.
static __always_inline int check_inline(struct dscratch *s, __u32 n, __u32 uid)
{
	if (!s)
		return -1;
	s->w.named = 0;
	if (n < 12 + 5 || n > QBUF)
		return -1;
	__u16 flags = drd16(s, 2);
	if ((flags & 0x8000) || ((flags >> 11) & 0xf) != 0) // a response, or not a QUERY
		return -1;
	if (drd16(s, 4) != 1 || drd16(s, 6) != 0 || drd16(s, 8) != 0 || drd16(s, 10) > 1)
		return -1;
	s->w.n = n;
	s->w.named = 1;
	__u32 dotlens = 0;
	__u32 end = walk_labels(s, n, &dotlens);
	if (end == 0 || end + 5 > n)
		return -1;
	opaque(end); // keeps drd16's masks (the verifier lost end's bound)
	s->w.qtype = drd16(s, end + 1);
	return allowed(s, uid, end, dotlens);
}
// check_msg is check_inline as a global function: the verifier checks it
// once, not at each of its call sites (UDP, and each TCP message).
__noinline int check_msg(struct dscratch *s, __u32 n, __u32 uid)
{
	return check_inline(s, n, uid);
}

static __always_inline void dcount(__u32 idx)
{
	bump(&dns_policy_stats, idx);
}

// deny counts a query that was not allowed (verdict 0, or -1:
// malformed) and reports it to user space; it returns what the program
// returns. meta is the query type, the protocol << 16 and the family <<
// 24; the destination is in s->daddr. A global function: the program's
// common path (an allowed query) stays short, in fewer cache lines.
__noinline int deny(struct dscratch *s, __u32 uid, int verdict, __u32 meta)
{
	if (!s)
		return enforce ? 0 : 1;
	dcount(verdict < 0 ? DP_MALFORMED : (enforce ? DP_DENIED : DP_AUDITED));
	struct dns_denial *e = bpf_ringbuf_reserve(&dns_denials, sizeof(*e), 0);
	if (!e) {
		dcount(DP_LOST);
		return enforce ? 0 : 1;
	}
	e->ts = bpf_ktime_get_boot_ns();
	e->uid = uid;
	e->dropped = enforce ? 1 : 0;
	e->reason = verdict < 0 ? DR_MALFORMED : DR_NOT_ALLOWED;
	e->proto = meta >> 16;
	e->family = meta >> 24;
	e->qtype = meta;
	s->w.tlen = 0;
	if (s->w.named)
		name_text(s);
	__u32 len = s->w.tlen;
	e->len = len < NAME_BUF ? len : NAME_BUF - 1;
	__builtin_memcpy(e->daddr, s->daddr, 16);
	__builtin_memcpy(e->name, s->text, NAME_BUF);
	bpf_ringbuf_submit(e, 0);
	return enforce ? 0 : 1;
}

// judge counts and reports a verdict; it returns what the program returns.
static __always_inline int judge(struct dscratch *s, int verdict, __u32 uid, __u16 qtype, __u8 proto,
				 __u8 family, __u8 daddr[16])
{
	if (verdict == 1) {
		dcount(DP_ALLOWED);
		return 1;
	}
	__builtin_memcpy(s->daddr, daddr, 16);
	// A global function's result is any number to the verifier.
	return deny(s, uid, verdict, qtype | (__u32)proto << 16 | (__u32)family << 24) ? 1 : 0;
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

// copy_linear is copy_msg for a message in the packet's linear data (a
// UDP query as a socket sends it): eight-byte loads, no helper call. It
// leaves anything else to copy_msg.
static __always_inline __u32 copy_linear(struct __sk_buff *skb, struct dscratch *s, __u32 off, __u32 n)
{
	if (n == 0 || n > QBUF || off > 64)
		return copy_msg(skb, s, off, n);
	void *p = (void *)(long)skb->data + off;
	void *end = (void *)(long)skb->data_end;
	if (p + n > end)
		return copy_msg(skb, s, off, n);
	__u32 k;
	for (k = 0; k < QBUF / 8; k++) {
		if (k * 8 + 8 > n || p + k * 8 + 8 > end)
			break;
		*(__u64 *)(s->data + k * 8) = *(__u64 *)(p + k * 8);
	}
	// The last bytes: one word, the eight that end the message (over
	// some copied already), when there are eight.
	if (k * 8 < n && n >= 8) {
		__u32 t = n - 8;
		opaque(t); // one packet pointer, checked and read
		void *q = p + (t & QMASK);
		if (q + 8 > end)
			return copy_msg(skb, s, off, n);
		*(__u64 *)(s->data + (t & QMASK)) = *(__u64 *)q;
		return n;
	}
	// Through memory, so the verifier forgets which k it was: the code
	// after the loop is checked once, not once a k.
	s->w.pos = k * 8;
	__u32 i = s->w.pos;
	for (int j = 0; j < 8; j++, i++) {
		if (i >= n || i >= QBUF)
			break;
		__u8 *q = p + i;
		if ((void *)(q + 1) > end)
			return copy_msg(skb, s, off, n);
		s->data[i] = *q;
	}
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
		s->w.named = 0;
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

// udp_query judges the UDP datagram at off (its header in udp) to port 53.
static __always_inline int udp_query(struct __sk_buff *skb, struct dscratch *s, __u32 uid, __u32 off,
				     struct udphdr *udp, __u8 family, __u8 daddr[16], int linear)
{
	dcount(DP_QUERIES);
	__u32 ulen = bpf_ntohs(udp->len);
	__u32 n = 0;
	if (ulen > sizeof(*udp))
		n = linear ? copy_linear(skb, s, off + sizeof(*udp), ulen - sizeof(*udp))
			   : copy_msg(skb, s, off + sizeof(*udp), ulen - sizeof(*udp));
	s->w.qtype = 0;
	int v = n ? check_msg(s, n, uid) : -1;
	return judge(s, v, uid, s->w.qtype, IPPROTO_UDP, family, daddr);
}

// other_packet judges what fast_udp leaves: IPv4 with options, IPv6 with
// extension headers, TCP, headers out of the linear data. A global
// function, out of the common path.
__noinline int other_packet(struct __sk_buff *skb, __u32 uid)
{
	struct dscratch *s = dscratch();
	if (!s)
		return enforce ? 0 : 1;
	s->w.named = 0;
	__u8 family = 0, proto = 0, daddr[16] = {};
	__u32 off = 0;
	struct udphdr udp;
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
	return udp_query(skb, s, uid, off, &udp, family, daddr, 0);
}

SEC("cgroup_skb/egress")
int dns_policy(struct __sk_buff *skb)
{
	struct sock *sk = pkt_sock(skb);
	if (sock_netns(skb, sk) != netns_cookie)
		return 1;
	__u8 family = 0, daddr[16] = {};
	__u32 off = 0;
	struct udphdr udp;
	if (!fast_udp(skb, &family, &off, &udp, daddr))
		return other_packet(skb, sock_uid(skb, sk)) ? 1 : 0;
	if (udp.dest != bpf_htons(DNS_PORT))
		return 1; // most packets: UDP, not DNS
	struct dscratch *s = dscratch();
	if (!s)
		return enforce ? 0 : 1;
	s->w.named = 0;
	return udp_query(skb, s, sock_uid(skb, sk), off, &udp, family, daddr, 1);
}
