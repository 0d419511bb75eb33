//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// Name check. On a shared address (a CDN, a reverse proxy) an address
// allow-list for one name opens every name the address serves. This
// cgroup_skb/egress program checks the name a TCP client presents on its
// first data, for the destinations user space lists as name-checked
// (uid, address, protocol, port) in nc_dests:
//
//  - the TLS ClientHello's server_name (SNI), or
//  - for plain HTTP, the Host header of the first request.
//
// The name (lower case, without a trailing dot) must be one of the names
// listed for that destination in nc_names (FNV-1a 64 hashes), or match a
// "*.suffix" listed there (NC_SUFFIXES labels deep at most). Otherwise,
// or when the first data shows no name (not TLS nor HTTP, no SNI, a
// ClientHello fragmented over TLS records, a request in absolute form,
// more than NC_BUF bytes before the name), the program:
//
//  - in enforce mode drops the segment and every later one of the
//    socket (a cgroup_skb program cannot reset a connection: the client
//    sees no answer and retransmits until it gives up);
//  - in audit mode lets it pass;
//
// and in both counts it and tells user space (uid, destination, the name
// presented). A ClientHello or request split over several segments is
// gathered in the socket's own storage (nc_bufs, at most NC_BUF bytes and
// NC_MAX_SEGS segments) until the name is seen; the earlier segments
// pass, they hold no name. Once passed, a socket is left alone: its
// storage goes, and its later packets cost a socket-storage lookup that
// misses and a state check; a refused socket (enforce) keeps its storage,
// which drops its packets. Sockets that connected before the program was
// attached (first seen past SYN_SENT) and destinations that are not
// name-checked are never parsed and get no storage.
//
// A destination the DNS follower opened (follow.c: a user's follow rule
// matched a DNS answer) is in followed, a map the follower's programs
// fill when they accept the answer, before the client can read it: the
// first connection to it is checked too. For it, the mode and the names
// allowed are those of the user's follow rules on that protocol and port,
// listed by user space as a destination of address family 0 and no
// address (a rule template) in nc_dests and nc_names; a learned
// destination with names has its own entry, which comes first. Every
// check also accepts the names of the template of its user, protocol and
// port.
//
// With learn_all set (the learner), every TCP socket whose first data
// leaves after the attach is parsed the same way, and its name (or none)
// is told to user space; nothing is refused (see learn_first). The
// learner does not attach this program: its own egress program (egress.c,
// names_prog) passes it the TCP segments that may carry data by a tail
// call, so the hook runs one program a packet, but for a socket's
// segments that start more than NC_BUF bytes into its stream
// (tcp_past_name, tcpkind.h: this program never takes them).
//
// namecheck_parse is a test entry only (BPF_PROG_TEST_RUN): it runs the
// same parser on a packet's bytes and leaves the result in nc_result.

#include "common.h"
#include <linux/tcp.h>
#include "tcpkind.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define NC_BUF NAME_BYTES // bytes of first data held at most (4096, tcpkind.h); a power of two
#define NC_MASK (NC_BUF - 1)
#define NC_NAME 256 // a name's bytes at most (253 are valid), a power of two
#define NC_MAX_SEGS 8
#define NC_MAX_EXT 64 // TLS extensions walked
#define NC_MAX_METHOD 16
#define AF_INET 2
#define AF_INET6 10
#define NC_SUFFIXES 4 // wildcard levels: "*.a.b" allows x.a.b .. w.x.y.z.a.b

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

#define MODE_AUDIT 1
#define MODE_ENFORCE 2
#define MODE_LEARN 3 // the learner: every name is told, nothing refused

enum nc_stat {
	NS_CHECKED = 0,   // sockets whose name was checked
	NS_PASSED = 1,    // ... and was allowed
	NS_MISMATCH = 2,  // ... presented a name not allowed
	NS_NONAME = 3,    // ... presented no name the parser accepts
	NS_DROPPED = 4,   // segments dropped (enforce)
	NS_GATHERED = 5,  // segments held to gather a split ClientHello or request
	NS_LOST = 6,      // events user space could not be told about
	NS_NOSTORE = 7,   // sockets without socket storage (dropped in enforce)
	NS_MAX = 8,
};

enum nc_state {
	ST_DONE = 1,    // left alone
	ST_PENDING = 2, // name-checked, waiting for its name
	ST_DENIED = 3,  // enforce: every segment is dropped
};

enum nc_result {
	NR_MORE = 0,   // the name may be in bytes not seen yet
	NR_NAME = 1,   // a name
	NR_NONAME = 2, // no name, and none will come
};

enum nc_kind {
	NK_NONE = 0,
	NK_TLS = 1,
	NK_HTTP = 2,
};

enum nc_verdict {
	NV_MISMATCH = 1,
	NV_NONAME = 2,
	NV_SEEN = 3, // learn: the name presented, or none
};

// Set by the loader.
volatile const __u64 netns_cookie = 0; // the enforced namespace (0: any)
volatile const __u8 learn_all = 0;     // 1: the learner's mode: every TCP socket is parsed and told

// nc_dest is a name-checked destination.
struct nc_dest {
	__u32 uid;
	__u16 port; // host byte order
	__u8 family; // 4 or 6
	__u8 proto;
	__u8 addr[16];
};

struct nc_name_key {
	struct nc_dest dest;
	__u64 hash; // of an allowed name
};

struct nc_sock {
	__u8 state;
	__u8 mode;
	__u8 segs;
	__u8 _pad;
	__u32 base; // sequence number of the first data byte
	__u32 len;  // bytes gathered in nc_bufs
	__u32 _pad2;
	struct nc_dest dest;
};

struct nc_buf {
	__u8 data[NC_BUF];
};

struct nc_event {
	__u64 cookie;
	struct nc_dest dest;
	__u8 verdict;  // nc_verdict
	__u8 kind;     // nc_kind
	__u8 enforced; // 1: dropped
	__u8 _pad;
	__u32 name_len;
	__u8 name[NC_NAME];
};

// nc_res is the parser's result; also the test entry's output.
struct nc_res {
	__u32 result; // nc_result
	__u32 kind;   // nc_kind
	__u64 hash;
	__u32 name_len;
	__u32 _pad;
	__u8 name[NC_NAME];
};

const struct nc_event *unused_nc_event __attribute__((unused));
const struct nc_name_key *unused_nc_name_key __attribute__((unused));
const struct nc_res *unused_nc_res __attribute__((unused));

// nc_dests: name-checked destinations -> mode (audit or enforce).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nc_dest);
	__type(value, __u8);
} nc_dests SEC(".maps");

// nc_names: (destination, name hash) pairs allowed.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nc_name_key);
	__type(value, __u8);
} nc_names SEC(".maps");

// followed: the follower's TCP destinations (see follow.c), shared
// through its pinned map; the value (until when) is the follower's.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FOLLOWED_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nc_dest);
	__type(value, __u64);
} followed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct nc_sock);
} nc_socks SEC(".maps");

// nc_bufs holds the first bytes of a socket still waiting for its name.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct nc_buf);
} nc_bufs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} nc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} nc_events SEC(".maps");

// The test entry's output.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nc_res);
} nc_result SEC(".maps");

// nc_walk is the state of the parser's loops.
struct nc_walk {
	__u32 n;    // bytes in data
	__u32 pos;  // next byte
	__u32 end;  // TLS: end of the ClientHello
	__u32 stop; // name: bytes left (TLS), or 0: until a terminator (HTTP)
	__u32 found;
	__s32 done;
	__u32 len; // name bytes taken
	__u32 dot; // a dot waits for the next character
	__u32 ndots;
	__u32 dots[NC_SUFFIXES]; // where the first labels end
	__u64 h;
};

// The data is twice NC_BUF so that the verifier accepts a copy of up to
// NC_BUF bytes at any offset below NC_BUF; only NC_BUF bytes are used.
struct nc_scratch {
	__u8 data[2 * NC_BUF];
	struct nc_walk w;
	struct nc_res r;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nc_scratch);
} nc_scratch SEC(".maps");

static __always_inline struct nc_scratch *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&nc_scratch, &zero);
}

static __always_inline __u8 at(struct nc_scratch *s, __u32 p)
{
	return s->data[p & NC_MASK];
}

static __always_inline __u32 rd16(struct nc_scratch *s, __u32 p)
{
	return ((__u32)at(s, p) << 8) | at(s, p + 1);
}

static __always_inline __u8 lower(__u8 c)
{
	if (c >= 'A' && c <= 'Z')
		return c + ('a' - 'A');
	return c;
}

static __always_inline int name_char(__u8 c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// name_byte takes one byte of a name: letters, digits, '-' and '_' in
// labels joined by single dots; a final dot is dropped. TLS names end
// after w.stop bytes; HTTP names at a space, tab, CR or ':' (the port).
static long name_byte(__u32 i, void *ctx)
{
	struct nc_scratch *s = scratch();
	if (!s)
		return 1;
	struct nc_walk *w = &s->w;
	if (w->stop == 0 && w->found) { // TLS: all bytes taken
		w->done = 1;
		return 1;
	}
	if (w->pos >= w->n) {
		w->done = 0; // more to come
		return 1;
	}
	__u8 c = lower(at(s, w->pos));
	w->pos++;
	if (w->found) // TLS: count down
		w->stop--;
	if (!w->found && (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ':')) {
		if (w->len == 0 && (c == ' ' || c == '\t'))
			return 0; // spaces before the value
		w->done = 1;
		return 1;
	}
	if (c == '.') {
		if (w->len == 0 || w->dot) {
			w->done = -1;
			return 1;
		}
		w->dot = 1;
		return 0;
	}
	if (!name_char(c) || w->len + w->dot >= NC_NAME - 2) {
		w->done = -1;
		return 1;
	}
	if (w->dot) {
		s->r.hash = (s->r.hash ^ '.') * FNV_PRIME;
		s->r.name[w->len & (NC_NAME - 1)] = '.';
		w->len++;
		w->dot = 0;
	}
	s->r.hash = (s->r.hash ^ c) * FNV_PRIME;
	s->r.name[w->len & (NC_NAME - 1)] = c;
	w->len++;
	return 0;
}

// take_name hashes the name at pos (len bytes for TLS, 0: HTTP) into
// s->r; it returns an nc_result.
static __always_inline int take_name(struct nc_scratch *s, __u32 pos, __u32 len)
{
	s->w.pos = pos;
	s->w.stop = len;
	s->w.found = len > 0; // reused: 1 for a counted name
	s->w.len = 0;
	s->w.dot = 0;
	s->w.done = -1;
	s->r.hash = FNV_OFFSET;
	bpf_loop(NC_NAME + 16, name_byte, 0, 0);
	if (s->w.done == 0)
		return NR_MORE;
	if (s->w.done < 0 || s->w.len == 0)
		return NR_NONAME;
	s->r.name_len = s->w.len;
	return NR_NAME;
}

// tls_ext takes one extension of a ClientHello; it stops at the
// server_name extension (w.found = its offset), at the end (done = -1),
// or where the bytes seen end (done = 0).
static long tls_ext(__u32 i, void *ctx)
{
	struct nc_scratch *s = scratch();
	if (!s)
		return 1;
	struct nc_walk *w = &s->w;
	__u32 p = w->pos;
	if (p >= w->end) {
		w->done = -1; // no server_name
		return 1;
	}
	if (p + 4 > w->n || p >= NC_BUF) {
		w->done = 0;
		return 1;
	}
	__u32 type = rd16(s, p), len = rd16(s, p + 2);
	if (p + 4 + len > w->end) {
		w->done = -1;
		return 1;
	}
	if (type == 0) {
		w->found = p + 4;
		w->stop = len;
		w->done = 1;
		return 1;
	}
	w->pos = p + 4 + len;
	return 0;
}

// need says whether the bytes up to p are at hand.
#define NEED(p)                         \
	do {                            \
		if ((p) > n)            \
			return NR_MORE; \
	} while (0)

// parse_tls finds the server_name of a ClientHello.
static __always_inline int parse_tls(struct nc_scratch *s, __u32 n)
{
	s->r.kind = NK_TLS;
	NEED(9);
	if (at(s, 1) != 3 || at(s, 5) != 1) // TLS record, a ClientHello
		return NR_NONAME;
	__u32 rlen = rd16(s, 3);
	__u32 hlen = ((__u32)at(s, 6) << 16) | rd16(s, 7);
	if (hlen + 4 > rlen) // split over TLS records: not followed
		return NR_NONAME;
	__u32 end = 9 + hlen;
	__u32 p = 9 + 2 + 32; // version, random
	NEED(p + 1);
	p += 1 + at(s, p); // session id
	NEED(p + 2);
	p += 2 + rd16(s, p); // cipher suites
	NEED(p + 1);
	p += 1 + at(s, p); // compression methods
	if (p + 2 > end)
		return NR_NONAME; // no extensions
	NEED(p + 2);
	if (p + 2 + rd16(s, p) != end)
		return NR_NONAME;
	s->w.n = n;
	s->w.pos = p + 2;
	s->w.end = end;
	s->w.found = 0;
	s->w.done = -1;
	bpf_loop(NC_MAX_EXT, tls_ext, 0, 0);
	if (s->w.done != 1)
		return s->w.done == 0 ? NR_MORE : NR_NONAME;
	__u32 q = s->w.found, len = s->w.stop;
	NEED(q + len);
	// One host_name: list length, type 0, name length.
	if (len < 5 || rd16(s, q) + 2 != len || at(s, q + 2) != 0 || rd16(s, q + 3) + 5 != len)
		return NR_NONAME;
	if (len - 5 >= NC_NAME)
		return NR_NONAME;
	return take_name(s, q + 5, len - 5);
}

// http_byte looks for the Host header line by line (done = 1, w.found
// its value's offset), the end of the headers (-1) or the end of the
// bytes seen (0).
static long http_byte(__u32 i, void *ctx)
{
	struct nc_scratch *s = scratch();
	if (!s)
		return 1;
	struct nc_walk *w = &s->w;
	__u32 p = w->pos;
	if (p >= w->n || p >= NC_BUF) {
		w->done = 0;
		return 1;
	}
	w->pos = p + 1;
	if (at(s, p) != '\n')
		return 0;
	p++; // a line starts
	if (p >= w->n) {
		w->done = 0;
		return 1;
	}
	__u8 c = at(s, p);
	if (c == '\r' || c == '\n') {
		w->done = -1; // end of the headers
		return 1;
	}
	if (p + 5 > w->n) {
		w->done = 0;
		return 1;
	}
	if (lower(c) == 'h' && lower(at(s, p + 1)) == 'o' && lower(at(s, p + 2)) == 's' &&
	    lower(at(s, p + 3)) == 't' && at(s, p + 4) == ':') {
		w->found = p + 5;
		w->done = 1;
		return 1;
	}
	return 0;
}

// host_tail reads what follows a Host name on its line: the port (w.dot
// 1) and then spaces (w.dot 2) up to the line's end (done = 1); anything
// else is not one name (done = -1).
static long host_tail(__u32 i, void *ctx)
{
	struct nc_scratch *s = scratch();
	if (!s)
		return 1;
	struct nc_walk *w = &s->w;
	if (w->pos >= w->n || w->pos >= NC_BUF) {
		w->done = 0;
		return 1;
	}
	__u8 c = at(s, w->pos);
	w->pos++;
	if (c == '\r' || c == '\n') {
		w->done = 1;
		return 1;
	}
	if (c == ' ' || c == '\t') {
		w->dot = 2;
		return 0;
	}
	if (c >= '0' && c <= '9' && w->dot == 1)
		return 0;
	w->done = -1;
	return 1;
}

// host_line_ends says whether the Host line that ends at byte e (its CR or
// LF) is the whole value: NR_NAME when the next line starts with no space
// or tab, NR_NONAME when it does (an obsolete line folding: a server that
// joins it reads another value; RFC 9112 lets it), or for a CR that no LF
// follows, and NR_MORE until the byte that decides is seen.
static __always_inline int host_line_ends(struct nc_scratch *s, __u32 e, __u32 n)
{
	if (at(s, e) == '\r') {
		NEED(e + 2);
		if (at(s, e + 1) != '\n')
			return NR_NONAME;
		e++;
	}
	NEED(e + 2);
	__u8 c = at(s, e + 1);
	if (c == ' ' || c == '\t')
		return NR_NONAME;
	return NR_NAME;
}

// parse_http finds the Host of a request in origin form ("GET /...").
static __always_inline int parse_http(struct nc_scratch *s, __u32 n)
{
	s->r.kind = NK_HTTP;
	__u32 p = 0;
	for (int i = 0; i < NC_MAX_METHOD; i++) {
		if (p >= n)
			return NR_MORE;
		__u8 c = at(s, p);
		if (c == ' ')
			break;
		if (c < 'A' || c > 'Z')
			return NR_NONAME;
		p++;
	}
	if (p == 0 || p >= NC_MAX_METHOD)
		return NR_NONAME;
	NEED(p + 2);
	if (at(s, p + 1) != '/') // absolute, authority or asterisk form
		return NR_NONAME;
	s->w.n = n;
	s->w.pos = p + 2;
	s->w.done = 0;
	s->w.found = 0;
	bpf_loop(NC_BUF, http_byte, 0, 0);
	if (s->w.done != 1)
		return s->w.done == 0 ? NR_MORE : NR_NONAME;
	int res = take_name(s, s->w.found, 0);
	if (res != NR_NAME)
		return res;
	// The name must be the whole value, but for a port and spaces: the
	// first word of "Host: a.lab b.lab" is not what a server reads (Go's
	// reads "a.lab b.lab" and refuses it), so it is no name.
	__u8 t = at(s, s->w.pos - 1);
	if (t == '\r' || t == '\n')
		return host_line_ends(s, s->w.pos - 1, n);
	s->w.dot = t == ':' ? 1 : 2;
	s->w.done = -1;
	bpf_loop(NC_BUF, host_tail, 0, 0);
	if (s->w.done != 1)
		return s->w.done == 0 ? NR_MORE : NR_NONAME;
	return host_line_ends(s, s->w.pos - 1, n);
}

// parse reads the first n bytes a client sent (in s->data).
static __always_inline int parse(struct nc_scratch *s, __u32 n)
{
	s->r.kind = NK_NONE;
	s->r.name_len = 0;
	s->r.hash = 0;
	if (n == 0)
		return NR_MORE;
	__u8 c = at(s, 0);
	if (c == 0x16)
		return parse_tls(s, n);
	if (c >= 'A' && c <= 'Z')
		return parse_http(s, n);
	return NR_NONAME;
}

static __always_inline void count(__u32 idx)
{
	bump(&nc_stats, idx);
}

// tcp_seg finds a TCP segment's destination, sequence number, payload
// offset and length, and whether it is a SYN.
struct seg {
	__u32 seq;
	__u32 off;
	__u32 len;
	__u8 syn;
};

// tcp_off finds the TCP header of a packet, past IPv6 extension headers
// (l4_hdr); -1 when it is not there.
static __always_inline int tcp_off(struct __sk_buff *skb, __u32 *l4off)
{
	__u8 family, proto;
	if (l4_hdr(skb, &family, &proto, l4off, 0, 0) < 0)
		return -1;
	return proto == IPPROTO_TCP ? 0 : -1;
}

static __always_inline int tcp_seg(struct __sk_buff *skb, struct seg *g)
{
	__u32 l4off;
	if (tcp_off(skb, &l4off) < 0)
		return -1;
	struct tcphdr th;
	if (bpf_skb_load_bytes(skb, l4off, &th, sizeof(th)) < 0)
		return -1;
	g->seq = bpf_ntohl(th.seq);
	g->syn = th.syn;
	g->off = l4off + th.doff * 4;
	g->len = skb->len > g->off ? skb->len - g->off : 0;
	return 0;
}

// sock_dest reads a TCP socket's destination from the socket, not from
// its packets' headers; an IPv4-mapped IPv6 address is IPv4.
static __always_inline int sock_dest(struct bpf_sock *sk, struct nc_dest *d)
{
	d->proto = IPPROTO_TCP;
	d->port = bpf_ntohs(sk->dst_port);
	if (sk->family == AF_INET) {
		__u32 a = sk->dst_ip4;
		d->family = 4;
		__builtin_memcpy(d->addr, &a, 4);
		return 0;
	}
	if (sk->family != AF_INET6)
		return -1;
	__u32 w0 = sk->dst_ip6[0], w1 = sk->dst_ip6[1], w2 = sk->dst_ip6[2], w3 = sk->dst_ip6[3];
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		d->family = 4;
		__builtin_memcpy(d->addr, &w3, 4);
		return 0;
	}
	d->family = 6;
	__builtin_memcpy(d->addr, &w0, 4);
	__builtin_memcpy(d->addr + 4, &w1, 4);
	__builtin_memcpy(d->addr + 8, &w2, 4);
	__builtin_memcpy(d->addr + 12, &w3, 4);
	return 0;
}

// tell reports a socket whose name was refused.
static __always_inline void tell(struct __sk_buff *skb, struct nc_sock *st, struct nc_scratch *s,
				 __u8 verdict)
{
	struct nc_event *e = bpf_ringbuf_reserve(&nc_events, sizeof(*e), 0);
	if (!e) {
		count(NS_LOST);
		return;
	}
	e->cookie = bpf_get_socket_cookie(skb);
	e->dest = st->dest;
	e->verdict = verdict;
	e->kind = s->r.kind;
	e->enforced = st->mode == MODE_ENFORCE;
	e->_pad = 0;
	e->name_len = verdict != NV_NONAME ? s->r.name_len : 0;
	__builtin_memcpy(e->name, s->r.name, NC_NAME);
	bpf_ringbuf_submit(e, 0);
}

// dot_byte notes where the name's first labels end.
static long dot_byte(__u32 i, void *ctx)
{
	struct nc_scratch *s = scratch();
	if (!s || i >= s->r.name_len || s->w.ndots >= NC_SUFFIXES)
		return 1;
	if (s->r.name[i & (NC_NAME - 1)] == '.')
		s->w.dots[s->w.ndots++ & (NC_SUFFIXES - 1)] = i;
	return 0;
}

// suffix_byte hashes one more byte of a suffix of the name.
static long suffix_byte(__u32 i, void *ctx)
{
	struct nc_scratch *s = scratch();
	if (!s || s->w.pos >= s->r.name_len)
		return 1;
	s->w.h = (s->w.h ^ s->r.name[s->w.pos & (NC_NAME - 1)]) * FNV_PRIME;
	s->w.pos++;
	return 0;
}

// wildcard says whether a rule "*.suffix" of the destination allows the
// name: a suffix after one of its first NC_SUFFIXES labels (a name rule's
// hash, as the follower hashes it).
static __always_inline int wildcard(struct nc_scratch *s, struct nc_dest *d)
{
	s->w.ndots = 0;
	bpf_loop(NC_NAME, dot_byte, 0, 0);
	struct nc_name_key k = {.dest = *d};
	for (int j = 0; j < NC_SUFFIXES; j++) {
		if ((__u32)j >= s->w.ndots)
			break;
		s->w.pos = s->w.dots[j] + 1;
		s->w.h = ((FNV_OFFSET ^ '*') * FNV_PRIME ^ '.') * FNV_PRIME;
		bpf_loop(NC_NAME, suffix_byte, 0, 0);
		k.hash = s->w.h;
		if (bpf_map_lookup_elem(&nc_names, &k))
			return 1;
	}
	return 0;
}

// template is the rule template of a destination: its user, protocol
// and port, family 0 and no address.
static __always_inline void template(struct nc_dest *t, struct nc_dest *d)
{
	__builtin_memset(t, 0, sizeof(*t));
	t->uid = d->uid;
	t->port = d->port;
	t->proto = d->proto;
}

// allowed says whether the name (hashed in s->r) is one of the
// destination's names, or of its user's follow rules there.
static __always_inline int allowed(struct nc_scratch *s, struct nc_dest *d)
{
	struct nc_name_key k = {.dest = *d, .hash = s->r.hash};
	if (bpf_map_lookup_elem(&nc_names, &k) || wildcard(s, d))
		return 1;
	template(&k.dest, d);
	return bpf_map_lookup_elem(&nc_names, &k) || wildcard(s, &k.dest);
}

// done leaves a socket alone from now on: its storage goes, and its later
// packets, past SYN_SENT, are not looked at (see first). It passes.
static __always_inline int done(struct bpf_sock *sk)
{
	bpf_sk_storage_delete(&nc_socks, sk);
	return 1;
}

// decide settles a socket on the parser's result; it returns the
// program's verdict for the segment.
static __always_inline int decide(struct __sk_buff *skb, struct bpf_sock *sk, struct nc_sock *st,
				  struct nc_scratch *s, int r)
{
	if (st->len)
		bpf_sk_storage_delete(&nc_bufs, sk);
	st->len = 0;
	count(NS_CHECKED);
	__u8 verdict = NV_NONAME;
	if (st->mode == MODE_LEARN) {
		if (r != NR_NAME)
			s->r.name_len = 0;
		tell(skb, st, s, NV_SEEN);
		// The learner keeps the storage, marked done: its later
		// packets find it and leave at the state test, cheaper than a
		// lookup that misses followed by learn_first's TCP state read.
		st->state = ST_DONE;
		return 1;
	}
	if (r == NR_NAME) {
		if (allowed(s, &st->dest)) {
			count(NS_PASSED);
			return done(sk);
		}
		verdict = NV_MISMATCH;
	}
	count(verdict == NV_MISMATCH ? NS_MISMATCH : NS_NONAME);
	tell(skb, st, s, verdict);
	if (st->mode != MODE_ENFORCE)
		return done(sk);
	st->state = ST_DENIED;
	count(NS_DROPPED);
	return 0;
}

// gather puts the segment's new bytes after those held, in s->data; it
// returns how many bytes s->data holds, 0 when the segment brings
// nothing new, -1 when it comes out of order.
static __always_inline int gather(struct __sk_buff *skb, struct bpf_sock *sk, struct nc_sock *st,
				  struct seg *g, struct nc_scratch *s)
{
	__u32 held = st->len;
	__u32 from = g->seq + g->syn - st->base; // the segment's first byte in the stream
	if (from > held)
		return -1;
	if (from + g->len <= held)
		return 0; // sent again
	__u32 skip = held - from;
	if (held >= NC_BUF)
		return held;
	if (held) {
		struct nc_buf *b = bpf_sk_storage_get(&nc_bufs, sk, 0, 0);
		if (!b)
			return -1;
		bpf_probe_read_kernel(s->data, NC_BUF, b->data);
	}
	__u64 add = g->len - skip;
	if (add > NC_BUF - held)
		add = NC_BUF - held;
	add = ((add - 1) & NC_MASK) + 1;
	if (bpf_skb_load_bytes(skb, g->off + skip, s->data + (held & NC_MASK), add) < 0)
		return -1;
	return held + add;
}

// hold keeps the first n bytes for the next segment; -1 if it cannot.
static __always_inline int hold(struct bpf_sock *sk, struct nc_sock *st, struct nc_scratch *s, __u32 n)
{
	if (n >= NC_BUF || st->segs >= NC_MAX_SEGS)
		return -1;
	struct nc_buf *b = bpf_sk_storage_get(&nc_bufs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!b)
		return -1;
	bpf_probe_read_kernel(b->data, NC_BUF, s->data);
	st->len = n;
	st->segs++;
	count(NS_GATHERED);
	return 0;
}

// unparsed refuses a name-checked socket whose packet the program cannot
// read (no TCP header where it looks): it shows no name.
static __always_inline int unparsed(struct __sk_buff *skb, struct bpf_sock *sk, struct nc_sock *st)
{
	struct nc_scratch *s = scratch();
	if (!s)
		return st->mode != MODE_ENFORCE;
	s->r.kind = NK_NONE;
	s->r.name_len = 0;
	s->r.hash = 0;
	return decide(skb, sk, st, s, NR_NONAME);
}

// pending_seg checks segment g of a socket waiting for its name.
static __always_inline int pending_seg(struct __sk_buff *skb, struct bpf_sock *sk, struct nc_sock *st,
				       struct seg *gp)
{
	struct seg g = *gp;
	if (g.len == 0)
		return 1; // no data: handshake, acknowledgements, FIN, RST
	struct nc_scratch *s = scratch();
	if (!s)
		return st->mode != MODE_ENFORCE;
	int n = gather(skb, sk, st, &g, s);
	if (n == 0)
		return 1;
	if (n < 0)
		return st->mode != MODE_ENFORCE; // out of order: TCP sends it again
	int r = parse(s, n);
	if (r == NR_MORE && hold(sk, st, s, n) == 0)
		return 1;
	if (r == NR_MORE)
		r = NR_NONAME;
	return decide(skb, sk, st, s, r);
}

// pending checks a segment of a socket waiting for its name.
static __always_inline int pending(struct __sk_buff *skb, struct bpf_sock *sk, struct nc_sock *st)
{
	struct seg g = {};
	if (tcp_seg(skb, &g) < 0)
		return unparsed(skb, sk, st);
	return pending_seg(skb, sk, st, &g);
}

// first settles a socket's first packet (its SYN, when it connects after
// the program was attached): name-checked or left alone. The destination
// comes from the socket.
static __always_inline int first(struct __sk_buff *skb, struct bpf_sock *sk)
{
	struct nc_dest d = {};
	if (sk->state != BPF_TCP_SYN_SENT || sock_dest(sk, &d) < 0)
		return 1;
	d.uid = bpf_get_socket_uid(skb);
	__u8 *mode = bpf_map_lookup_elem(&nc_dests, &d);
	if (!mode && bpf_map_lookup_elem(&followed, &d)) {
		struct nc_dest t;
		template(&t, &d);
		mode = bpf_map_lookup_elem(&nc_dests, &t); // none: the user has no follow rule there now
	}
	if (!mode)
		return 1; // no storage: its later packets cost a lookup that misses
	struct nc_sock *st = bpf_sk_storage_get(&nc_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		count(NS_NOSTORE);
		return *mode != MODE_ENFORCE;
	}
	st->state = ST_PENDING;
	st->mode = *mode;
	st->len = 0;
	st->segs = 0;
	st->dest = d;
	struct seg g = {};
	if (tcp_seg(skb, &g) < 0 || !g.syn)
		return unparsed(skb, sk, st);
	st->base = g.seq + 1;
	if (g.len == 0)
		return 1;
	return pending(skb, sk, st); // data in the SYN (TCP Fast Open)
}

// learn_first is first for the learner (learn_all), which refuses
// nothing: a socket gets its storage only with its first data, not at
// its SYN, so a connection that sends nothing (a connect storm, a port
// probe) costs no storage and no header parse (its packets leave after
// reading its count of data segments sent), and once the name is told
// the storage stays, marked done, until the socket closes. The kernel
// counts a data segment in data_segs_out before the packet reaches this
// hook (__tcp_transmit_skb), so the first data leaves as the one packet
// whose segments (gso_segs) are all the data segments sent so far; a
// pure ACK or RST before it finds data_segs_out 0. A first data packet
// sent again (lost) finds the count past it and goes unparsed: its name
// is not learnt, as for a socket whose first data left before the
// attach. The destination and UID come from the socket, as in first;
// accepted sockets are left alone, as in first (see below).
static __always_inline int learn_first(struct __sk_buff *skb, struct bpf_sock *sk)
{
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	if (!tp)
		return 1;
	__u32 sent = tp->data_segs_out, segs = skb->gso_segs;
	if (sent == 0 || sent > (segs ? segs : 1))
		return 1;
	struct seg g = {};
	if (tcp_seg(skb, &g) < 0 || g.len == 0)
		return 1;
	// Only a connecting socket's first data is a client's: a socket
	// accepted from a listener in the cgroup (a server that speaks
	// first) is left alone, as first leaves it. Such a socket starts
	// with snd_una past its SYN-ACK (tcp_create_openreq_child), so its
	// bytes_acked is 0 until its peer acknowledges data; a connecting
	// socket's SYN counted 1 when it was acknowledged, or its data rides
	// on the SYN (TCP Fast Open).
	if (tp->bytes_acked == 0 && !(g.syn && sk->state == BPF_TCP_SYN_SENT))
		return 1;
	struct nc_dest d = {};
	if (sock_dest(sk, &d) < 0)
		return 1;
	d.uid = bpf_get_socket_uid(skb);
	struct nc_sock *st = bpf_sk_storage_get(&nc_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		count(NS_NOSTORE);
		return 1;
	}
	st->state = ST_PENDING;
	st->mode = MODE_LEARN;
	st->len = 0;
	st->segs = 0;
	st->dest = d;
	st->base = g.seq + g.syn;
	return pending_seg(skb, sk, st, &g);
}

SEC("cgroup_skb/egress")
int namecheck_egress(struct __sk_buff *skb)
{
	// The learner refuses nothing and reads only data: a segment
	// without any leaves here (a connect storm's every packet).
	if (learn_all && tcp_kind(skb) == TCP_BARE)
		return 1;
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_TCP)
		return 1;
	struct nc_sock *st = bpf_sk_storage_get(&nc_socks, sk, 0, 0);
	if (st) {
		if (st->state == ST_DONE)
			return 1;
		if (st->state == ST_DENIED) {
			count(NS_DROPPED);
			return 0;
		}
		return pending(skb, sk, st);
	}
	if (netns_cookie && bpf_get_netns_cookie(skb) != netns_cookie)
		return 1;
	if (learn_all)
		return learn_first(skb, sk);
	return first(skb, sk);
}

// namecheck_parse runs the parser on the packet's bytes (from the network
// header on, for BPF_PROG_TEST_RUN) and leaves the result in nc_result.
SEC("cgroup_skb/egress")
int namecheck_parse(struct __sk_buff *skb)
{
	struct nc_scratch *s = scratch();
	__u32 zero = 0;
	struct nc_res *out = bpf_map_lookup_elem(&nc_result, &zero);
	if (!s || !out)
		return 1;
	__u64 n = skb->len;
	if (n == 0)
		return 1;
	if (n > NC_BUF)
		n = NC_BUF;
	n = ((n - 1) & NC_MASK) + 1;
	if (bpf_skb_load_bytes(skb, 0, s->data, n) < 0)
		return 1;
	__builtin_memset(&s->r, 0, sizeof(s->r));
	s->r.result = parse(s, n);
	*out = s->r;
	return 1;
}
