//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// Egress discovery programs. Attached to one cgroup v2 directory, they see
// every outbound connect() and unconnected UDP sendmsg() of the processes in
// that cgroup and its descendants, every DNS query those processes send (a
// UDP datagram to port 53) and every UDP datagram from port 53 they receive
// (DNS answers). They never change a verdict: every program returns 1
// (allow).
//
// Connection attempts are counted in the kernel, in a hash map keyed by
// (cgroup, uid, comm, family, protocol, address, port). Only the first attempt
// of a flow in a drain interval produces a ring buffer record; repeats only
// bump the counter; a CPU's repeats of the first flow it counts in an
// interval bump a per-CPU entry instead (struct last_flow). User space
// swaps the hash map (and the per-CPU entries) out of an ARRAY_OF_MAPS
// every interval: the kernel waits for running programs before the swap
// returns, so the drained map is complete and no count is lost. When the map
// is full or not installed, every attempt becomes a counted ring buffer record
// instead, and a record that cannot be written is counted as lost.
//
// Per-packet cost: the cgroup_skb programs run on every packet of every
// socket in the cgroup. Each socket the programs have dealt with carries a
// small state in socket storage (freed with the socket): whether a
// connected UDP flow waits for its first datagram, and whether the socket
// addresses a DNS server. A packet of a socket with neither leaves after a
// few instructions; TCP packets leave at the protocol test (those that
// may carry data go on to the name check's learning program, see
// names_prog), and received UDP datagrams after reading their source port
// in place.
//
// DNS queries and answers go to one ring buffer, in the order the kernel
// handles them: a query is written before its datagram leaves, so before
// any answer to it. User space uses an answer only when it matches a query
// of the same socket (id, question and server).

#include "common.h"
#include "tcpkind.h" // tcp_kind: TCP segments told from their headers in place
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "Dual BSD/GPL";

// The few task_struct fields read, relocated against the running kernel's
// BTF (CO-RE): the thread group leader's comm is the process name; the
// current thread's comm may be a thread name such as "isc-net-0000". The
// comm is at most 15 characters and a process may set it ("npm view
// expres"): the name of the file the process runs (mm->exe_file, as
// /proc/PID/exe shows it) says which program it is.
struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry {
	struct qstr d_name;
} __attribute__((preserve_access_index));

struct path {
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct file *exe_file;
} __attribute__((preserve_access_index));

// The credentials' uid and gid are kuids (kuid_t: kernsock.h): UIDs of
// the initial user namespace, as bpf_get_current_uid_gid gives them.
#include "kernsock.h"

typedef struct {
	__u32 val;
} kgid_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
} __attribute__((preserve_access_index));

// The task's cgroup v2 id, as bpf_get_current_cgroup_id reads it:
// task->cgroups->dfl_cgrp->kn->id.
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	struct css_set *cgroups;
	struct task_struct *group_leader;
	struct mm_struct *mm;
	const struct cred *cred;
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

// The socket of a cgroup_skb program's packet (struct sock, sk_buff:
// kernsock.h): sk_uid is the socket owner's kuid, a UID of the initial
// user namespace, as the flows' UIDs are.

// NO_UID names the owner of a packet without a full socket: no user has
// it ((uid_t)-1 is invalid), so such a packet names nothing.
#define NO_UID 0xffffffff

#define AF_INET 2
#define AF_INET6 10
#define TASK_COMM_LEN 16
// EXE_LEN bounds the copy of the executable's file name (a longer name is
// cut to EXE_LEN - 1 bytes).
#define EXE_LEN 64

// DNS_MAX is the largest DNS answer payload copied; it must be a power of
// two. QUERY_MAX is the same for queries: a question (at most 255 bytes of
// name) follows the 12-byte header.
#define DNS_MAX 4096
#define QUERY_MAX 512

enum hook {
	HOOK_CONNECT4 = 1,
	HOOK_CONNECT6 = 2,
	HOOK_SENDMSG4 = 3,
	HOOK_SENDMSG6 = 4,
	// An unconnected UDP datagram counted at the egress packet
	// (udp_at_egress): sendmsg4/6 are not attached.
	HOOK_EGRESS_UDP = 5,
};

enum event_flags {
	// The attempt is also counted in the flow map (first of its flow in
	// this interval): user space must not count it again.
	EVENT_IN_MAP = 1,
	// The flow map was full or missing: this record is the only count.
	EVENT_COUNTED = 2,
};

enum stat_index {
	STAT_EVENTS_LOST = 0,    // attempts neither counted in the map nor recorded: lost
	STAT_NOTIFY_LOST = 1,    // first-of-flow records dropped (the hit is in the map)
	STAT_DNS_LOST = 2,       // DNS answers dropped: ring buffer full
	STAT_DNS_ERRORS = 3,     // DNS answers that could not be copied
	STAT_MAP_FULL = 4,       // attempts recorded through the ring buffer: map full
	STAT_UDP_UNSENT = 5,     // connected UDP sockets replaced before sending anything
	STAT_QUERY_LOST = 6,     // DNS queries dropped: ring buffer full (their answers go unused)
	STAT_MAX = 7,
};

enum dns_kind {
	DNS_ANSWER = 1,
	DNS_QUERY = 2,
};

struct flow_key {
	__u64 cgroup_id;
	__u32 uid;
	__u16 port; // host byte order
	__u8 family; // 4 or 6
	__u8 proto; // IPPROTO_*
	__u8 addr[16]; // IPv4 in the first four bytes
	char comm[TASK_COMM_LEN];
};

struct flow_val {
	__u64 hits;
	__u64 first_ns; // bpf_ktime_get_coarse_ns (see COUNT_FLOW)
	__u64 last_ns;
	__u64 cookie; // socket cookie of the first attempt in the interval
	__u32 tgid; // of the last attempt
	__u32 gid;
	char exe[EXE_LEN]; // of the first attempt; "" when unknown
};

struct event {
	__u64 cookie;
	__u64 cgroup_id;
	__u64 ts_ns; // bpf_ktime_get_coarse_ns (see COUNT_FLOW)
	__u32 uid;
	__u32 gid;
	__u32 tgid;
	__u16 port; // host byte order
	__u8 family; // 4 or 6
	__u8 proto;
	__u8 hook;
	__u8 flags;
	__u8 _pad[6];
	__u8 addr[16];
	char comm[TASK_COMM_LEN];
	char exe[EXE_LEN]; // "" when unknown
};

// dns_event heads every record of the dns ring; len bytes of UDP payload
// follow it in the record.
struct dns_event {
	__u64 cookie;
	__u64 ts_ns;
	__u32 uid;
	__u16 len; // bytes of payload copied after the header
	__u16 orig_len; // UDP payload length
	__u16 sport;
	__u16 dport;
	__u8 family; // 4 or 6
	__u8 kind; // enum dns_kind
	__u8 _pad[2];
	__u8 saddr[16];
	// For a query, the server the socket addressed (before any NAT in the
	// output path): the last connect() or sendmsg() to port 53.
	__u8 daddr[16];
};

struct dns_answer_rec {
	struct dns_event h;
	__u8 data[DNS_MAX];
};

struct dns_query_rec {
	struct dns_event h;
	__u8 data[QUERY_MAX];
};

// sock_state is what the programs keep of a UDP socket, in its socket
// storage. flags:
//   SK_PENDING: the socket connected and has not sent yet; key, gid, tgid
//     and hook describe the flow, counted when its first datagram leaves
//     (glibc's getaddrinfo connects a UDP socket to every candidate address
//     to sort them, and sends nothing: such a connect is not an egress flow);
//   SK_DNS: the socket last connected or sent to port 53 of dns_addr. The
//     output path may rewrite the destination (a DNAT to a resolver on
//     another port, as Docker's 127.0.0.11 does): the query is recognized by
//     this, and its answer comes back from this address.
// A socket with neither flag has nothing to do on its packets.
enum sock_flags {
	SK_PENDING = 1,
	SK_DNS = 2,
};

struct sock_state {
	__u64 flags; // 64 bits: the first datagram clears SK_PENDING with a compare-and-swap
	__u32 gid;
	__u32 tgid;
	__u8 hook; // of the pending flow
	__u8 dns_family;
	__u8 _pad[6];
	__u8 dns_addr[16];
	struct flow_key key; // the pending flow
	// udp_at_egress: the slot of the slot map of generation slot_gen
	// that counts this socket's repeats (see struct slot); 0: none.
	__u64 slot_gen;
	__u32 slot;
	__u32 _pad2;
};

// counting is what a slot and a last_flow entry hold after the word that
// marks them taken (gen, state): the flow they count the repeats of, and
// the counts. start_count fills it when the entry is taken; a repeat adds
// to hits and sets last_ns.
struct counting {
	__u64 hits;
	__u64 first_ns; // bpf_ktime_get_coarse_ns (see COUNT_FLOW)
	__u64 last_ns;
	// A last_flow's are of the last attempt; a slot's, of the process that
	// took it (only its datagrams count in it).
	__u32 tgid;
	__u32 gid;
	struct flow_key key;
	char exe[EXE_LEN]; // of the attempt that took the entry; "" when unknown
};

// SLOTS bounds the unconnected UDP sockets whose repeats are counted in a
// slot per drain interval (udp_at_egress); the others count in the flow
// map.
#define SLOTS 4096

// slot counts the repeats of one unconnected UDP socket's flow in a drain
// interval (udp_at_egress): the socket's first datagram of the interval
// is counted in the flow map and takes a slot; the next ones of the same
// process to the same destination add to the slot's hits, an atomic add
// on an array element the socket's state points to, instead of a hash
// lookup of the whole flow. Like the flow map, the slot map is swapped
// out at every drain and read whole by user space; each map carries its
// generation in slot 0 (with the number of slots taken in c.hits), and a
// slot counts only for the socket that took it in that generation. A
// taken slot's fields are written before its gen (an exchange: a full
// barrier), and never change in that generation.
struct slot {
	__u64 gen;
	struct counting c;
};

// last_flow counts, per CPU, the repeats of one flow in a drain interval
// at connect4/6 and sendmsg4/6: the first flow a CPU counts in the
// interval takes the CPU's entry, and later attempts of the same flow on
// that CPU add to its hits: a compare of the key and an atomic add on a
// line of that CPU's, instead of the flow map's hash lookup and an add on
// an entry every CPU shares (a connect storm to one destination, a
// sender's datagrams). The entry's flow never changes in an interval.
// Like the flow map, the map holding the entries is swapped at every
// drain (the kernel waits for the programs still running on the old one)
// and read on every CPU by user space: each attempt is counted once, in
// the flow map, in a record or here. The entry is taken by a
// compare-and-swap of state (LAST_TAKING), its fields written, then
// state set to LAST_READY by an exchange (a full barrier); the add is
// atomic: a program run in process context may be preempted by another
// run of it on the same CPU.
struct last_flow {
	__u64 state;
	struct counting c;
};

enum last_state {
	LAST_FREE = 0,
	LAST_TAKING = 1,
	LAST_READY = 2,
};

// Force BTF for the types user space decodes.
const struct event *unused_event __attribute__((unused));
const struct dns_event *unused_dns_event __attribute__((unused));
const struct flow_key *unused_flow_key __attribute__((unused));
const struct flow_val *unused_flow_val __attribute__((unused));
const struct slot *unused_slot __attribute__((unused));
const struct last_flow *unused_last_flow __attribute__((unused));

// Set by the loader before the programs are loaded.
// Wake the reader up only when this many bytes wait in the event ring; it
// also polls on a short timer. 0 wakes it for every record.
volatile const __u32 wakeup_bytes = 0;
// 0 turns the in-kernel counting off: every attempt becomes a record.
volatile const __u8 aggregate = 1;
// 1 counts unconnected UDP datagrams at the egress packet (egress_out)
// instead of in the sendmsg4/6 programs, which user space then leaves
// unattached: the kernel locks the socket and builds a context for every
// unconnected datagram while a sendmsg program is attached, whatever it
// does.
volatile const __u8 udp_at_egress = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20);
} dns_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// The state of each UDP socket the programs have seen, freed with the
// socket.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} socks SEC(".maps");

// names_prog holds, in slot 0, the name check's learning program
// (namecheck.c's namecheck_egress loaded with learn_all) when the learner
// records the names connections present: egress_out passes it the TCP
// segments that may carry data by a tail call, so each packet leaving
// the cgroup runs one program on the egress hook, not two. A socket's
// segments that start past its first bytes, which that program never
// takes, leave before the tail call (tcp_past_name). An empty slot
// makes the tail call fall through: the names are not recorded.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} names_prog SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 65536);
		__type(key, struct flow_key);
		__type(value, struct flow_val);
	});
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, SLOTS);
		__type(key, __u32);
		__type(value, struct slot);
	});
} slots SEC(".maps");

// last_flows holds, in slot 0, the per-CPU entries of struct last_flow;
// user space swaps it with an empty one at every drain.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, struct last_flow);
	});
} last_flows SEC(".maps");

static __always_inline void count(__u32 idx)
{
	bump(&stats, idx);
}

static __always_inline __u64 wakeup_flag(void)
{
	if (wakeup_bytes == 0)
		return 0;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

// current_exe copies the name of the file the current process runs into
// dst (EXE_LEN bytes), or "" when the current process is not tgid (a
// packet sent from another context) or has no such file (a kernel
// thread). Only first attempts of a flow pay for it.
static __always_inline void current_exe(char *dst, __u32 tgid)
{
	dst[0] = 0;
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) != tgid)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const unsigned char *name = BPF_CORE_READ(task, mm, exe_file, f_path.dentry, d_name.name);
	if (!name || bpf_probe_read_kernel_str(dst, EXE_LEN, name) < 0)
		dst[0] = 0;
}

// emit writes a ring buffer record of an attempt; exe is the executable's
// name when the caller has it, else NULL.
static __always_inline void emit(struct flow_key *k, __u64 cookie, __u64 now,
				 __u32 gid, __u32 tgid, __u8 hook, __u8 flags, const char *exe)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(flags & EVENT_IN_MAP ? STAT_NOTIFY_LOST : STAT_EVENTS_LOST);
		return;
	}
	e->cookie = cookie;
	e->cgroup_id = k->cgroup_id;
	e->ts_ns = now;
	e->uid = k->uid;
	e->gid = gid;
	e->tgid = tgid;
	e->port = k->port;
	e->family = k->family;
	e->proto = k->proto;
	e->hook = hook;
	e->flags = flags;
	__builtin_memcpy(e->addr, k->addr, sizeof(e->addr));
	__builtin_memcpy(e->comm, k->comm, sizeof(e->comm));
	if (exe)
		__builtin_memcpy(e->exe, exe, sizeof(e->exe));
	else
		current_exe(e->exe, tgid);
	bpf_ringbuf_submit(e, wakeup_flag());
}

// count_hit adds an attempt to its flow's entry in the flow map; 0 when
// the flow has no entry (or the map is not installed).
static __always_inline int count_hit(void *inner, struct flow_key *k, __u64 now, __u32 gid, __u32 tgid)
{
	struct flow_val *v = bpf_map_lookup_elem(inner, k);
	if (!v)
		return 0;
	__sync_fetch_and_add(&v->hits, 1);
	v->last_ns = now;
	v->tgid = tgid;
	v->gid = gid;
	return 1;
}

// count_new counts the first attempt of a flow in this interval: a new
// entry and a record, or a record only when the map is full or missing.
static __always_inline void count_new(void *inner, struct flow_key *k, __u64 cookie, __u64 now,
				      __u32 gid, __u32 tgid, __u8 hook)
{
	if (!inner) {
		emit(k, cookie, now, gid, tgid, hook, EVENT_COUNTED, 0);
		return;
	}
	struct flow_val nv = {
		.hits = 1,
		.first_ns = now,
		.last_ns = now,
		.cookie = cookie,
		.tgid = tgid,
		.gid = gid,
	};
	current_exe(nv.exe, tgid);
	long err = bpf_map_update_elem(inner, k, &nv, BPF_NOEXIST);
	if (err == 0) {
		emit(k, cookie, now, gid, tgid, hook, EVENT_IN_MAP, nv.exe);
		return;
	}
	// Another CPU inserted the same flow first: count on its entry.
	if (count_hit(inner, k, now, gid, tgid))
		return;
	// The map is full.
	count(STAT_MAP_FULL);
	emit(k, cookie, now, gid, tgid, hook, EVENT_COUNTED, nv.exe);
}

// flow_map is the flow map the programs count in, or NULL (in-kernel
// counting off, or no map installed: every attempt becomes a record).
static __always_inline void *flow_map(void)
{
	__u32 zero = 0;
	if (!aggregate)
		return 0;
	return bpf_map_lookup_elem(&flows, &zero);
}

// COUNT_FLOW counts an attempt of flow k made through ctx (a socket
// address or a packet: bpf_get_socket_cookie takes either). A repeat of
// a flow already in the map costs a lookup and an atomic add; the socket
// cookie (of the flow's first attempt in the interval) is read only for
// a new entry or a record. Attempts are timed with the coarse monotonic
// clock (the time of the last tick, a few ms at most behind): reading the
// clock source for bpf_ktime_get_boot_ns cost ~100 ns an attempt here (a
// third of a connect4 run), the coarse clock next to nothing. User space
// converts it with cgroupbpf.MonoClock.
#define COUNT_FLOW(ctx, k, gid, tgid, hook)                                                \
	do {                                                                               \
		void *inner_ = flow_map();                                                 \
		__u64 now_ = bpf_ktime_get_coarse_ns();                                     \
		if (!inner_ || !count_hit(inner_, (k), now_, (gid), (tgid)))                \
			count_new(inner_, (k), bpf_get_socket_cookie(ctx), now_, (gid), (tgid), \
				  (hook));                                                 \
	} while (0)

// udp_state updates a UDP socket's state at connect() or sendmsg(): it
// remembers a DNS server the socket addresses (port 53) and forgets it
// otherwise, and for a connect, the flow waiting for the first datagram.
// It returns 1 when the attempt waits for that datagram.
static __always_inline int udp_state(struct bpf_sock_addr *ctx, struct flow_key *k, __u32 gid,
				     __u32 tgid, __u8 hook)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	struct sock_state *st = bpf_sk_storage_get(&socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 0; // no memory: count it now rather than lose it
	__u64 flags = st->flags & ~SK_DNS;
	if (k->port == DNS_PORT) {
		flags |= SK_DNS;
		st->dns_family = k->family;
		__builtin_memcpy(st->dns_addr, k->addr, sizeof(st->dns_addr));
	}
	if (hook == HOOK_CONNECT4 || hook == HOOK_CONNECT6) {
		if (flags & SK_PENDING)
			// The socket connects again before sending: the earlier
			// destination got nothing.
			count(STAT_UDP_UNSENT);
		flags |= SK_PENDING;
		st->key = *k;
		st->gid = gid;
		st->tgid = tgid;
		st->hook = hook;
	}
	st->flags = flags;
	return flags & SK_PENDING && (hook == HOOK_CONNECT4 || hook == HOOK_CONNECT6);
}

// same_flow is whether a and b are the same flow (every field of the key).
static __always_inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] &&
	       x[5] == y[5];
}

// last_flow is this CPU's entry of the installed last_flows map, or NULL
// (in-kernel counting off, or no map installed).
static __always_inline struct last_flow *last_flow(void)
{
	__u32 zero = 0;
	if (!aggregate)
		return 0;
	void *m = bpf_map_lookup_elem(&last_flows, &zero);
	if (!m)
		return 0;
	return bpf_map_lookup_elem(m, &zero);
}

// count_last counts a repeat of the flow l holds; 0 when l holds another
// flow, or none yet.
static __always_inline int count_last(struct last_flow *l, struct flow_key *k, __u32 gid, __u32 tgid)
{
	if (l->state != LAST_READY || !same_flow(&l->c.key, k))
		return 0;
	__sync_fetch_and_add(&l->c.hits, 1);
	l->c.last_ns = bpf_ktime_get_coarse_ns();
	l->c.tgid = tgid;
	l->c.gid = gid;
	return 1;
}

// start_count makes c, of an entry just taken (a slot, a last_flow;
// marked taken after), count flow k of process tgid from now.
static __always_inline void start_count(struct counting *c, struct flow_key *k, __u32 gid, __u32 tgid)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	c->hits = 0;
	c->first_ns = now;
	c->last_ns = now;
	c->tgid = tgid;
	c->gid = gid;
	c->key = *k;
	current_exe(c->exe, tgid);
}

// take_last makes a free l hold flow k, which the attempt just counted
// elsewhere: its next attempts on this CPU in the interval count in l.
static __always_inline void take_last(struct last_flow *l, struct flow_key *k, __u32 gid, __u32 tgid)
{
	if (l->state != LAST_FREE || !__sync_bool_compare_and_swap(&l->state, LAST_FREE, LAST_TAKING))
		return;
	start_count(&l->c, k, gid, tgid);
	__sync_lock_test_and_set(&l->state, LAST_READY);
}

// record counts an attempt of the current task. The task's UID, GID,
// process id, cgroup and process name (the thread group leader's comm: a thread
// may be named "isc-net-0000") are read straight from its task_struct
// through the BTF pointer bpf_get_current_task_btf gives: plain loads
// instead of a helper call each (bpf_get_current_uid_gid,
// bpf_get_current_pid_tgid, bpf_get_current_cgroup_id, and two probe
// reads for a thread's leader),
// the same values (current_cred() is current->cred; its kuids are the
// initial namespace's UIDs). comm is NUL-padded in the kernel
// (strscpy_pad), so the 16 bytes copied are the name and zeros.
static __always_inline void record(struct bpf_sock_addr *ctx, struct flow_key *k, __u8 hook)
{
	struct task_struct *task = bpf_get_current_task_btf();
	const struct cred *cred = task->cred;
	__u32 tgid = task->tgid;
	__u32 gid = cred->gid.val;

	k->uid = cred->uid.val;
	k->proto = ctx->protocol;
	k->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	__builtin_memcpy(k->comm, task->group_leader->comm, TASK_COMM_LEN);

	if (k->proto == IPPROTO_UDP && udp_state(ctx, k, gid, tgid, hook))
		return;
	struct last_flow *l = last_flow();
	if (l && count_last(l, k, gid, tgid))
		return;
	COUNT_FLOW(ctx, k, gid, tgid, hook);
	if (l)
		take_last(l, k, gid, tgid);
}

static __always_inline void record4(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct flow_key k = {};
	__u32 ip4 = ctx->user_ip4;

	k.family = 4;
	k.port = bpf_ntohs((__u16)ctx->user_port);
	__builtin_memcpy(k.addr, &ip4, 4);
	record(ctx, &k, hook);
}

static __always_inline void record6(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct flow_key k = {};
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

	k.port = bpf_ntohs((__u16)ctx->user_port);
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		// ::ffff:a.b.c.d on an AF_INET6 socket: the peer is IPv4.
		k.family = 4;
		__builtin_memcpy(k.addr, &w3, 4);
	} else {
		k.family = 6;
		__builtin_memcpy(k.addr, &w0, 4);
		__builtin_memcpy(k.addr + 4, &w1, 4);
		__builtin_memcpy(k.addr + 8, &w2, 4);
		__builtin_memcpy(k.addr + 12, &w3, 4);
	}
	record(ctx, &k, hook);
}

// RECORDER defines the program of one hook: it records the attempt and
// always allows it.
#define RECORDER(section, name, recorder, hook)        \
	SEC(section)                                   \
	int name(struct bpf_sock_addr *ctx)            \
	{                                              \
		recorder(ctx, hook);                   \
		return 1;                              \
	}

RECORDER("cgroup/connect4", egress_connect4, record4, HOOK_CONNECT4)
RECORDER("cgroup/connect6", egress_connect6, record6, HOOK_CONNECT6)
RECORDER("cgroup/sendmsg4", egress_sendmsg4, record4, HOOK_SENDMSG4)
RECORDER("cgroup/sendmsg6", egress_sendmsg6, record6, HOOK_SENDMSG6)

// socket_uid is the UID, in the initial user namespace, of the owner of
// the socket skb belongs to. Not bpf_get_socket_uid: it maps the UID into
// the user namespace that owns the socket's network namespace, where an
// unprivileged user may be any UID it likes (unshare --map-user=N --net)
// and so pose as the victim of a name, or as a trusted resolver.
static __always_inline __u32 socket_uid(struct __sk_buff *skb)
{
	struct bpf_sock *bs = skb->sk;
	if (!bs || !bpf_sk_fullsock(bs))
		return NO_UID;
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct sock *sk = kskb->sk;
	if (!sk)
		return NO_UID;
	return sk->sk_uid.val;
}

// dns_head fills the header of a dns ring record from the packet.
static __always_inline void dns_head(struct __sk_buff *skb, struct dns_event *h, __u8 family,
				     struct udphdr *udp, __u16 plen, __u8 kind)
{
	h->cookie = bpf_get_socket_cookie(skb);
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->uid = socket_uid(skb);
	h->family = family;
	h->kind = kind;
	h->_pad[0] = 0;
	h->_pad[1] = 0;
	h->sport = bpf_ntohs(udp->source);
	h->dport = bpf_ntohs(udp->dest);
	h->orig_len = plen;
	h->len = 0;
	__builtin_memset(h->saddr, 0, sizeof(h->saddr));
	__builtin_memset(h->daddr, 0, sizeof(h->daddr));
	if (family == 4) {
		bpf_skb_load_bytes(skb, 12, h->saddr, 4);
		bpf_skb_load_bytes(skb, 16, h->daddr, 4);
	} else {
		bpf_skb_load_bytes(skb, 8, h->saddr, 16);
		bpf_skb_load_bytes(skb, 24, h->daddr, 16);
	}
}

// dns_query copies a DNS query leaving a UDP socket: a datagram to port 53,
// or to where a DNAT sent a datagram the socket addressed to port 53 (st,
// when the socket has a state).
static __always_inline void dns_query(struct __sk_buff *skb, struct sock_state *st)
{
	__u8 family;
	__u32 l4off;
	struct udphdr udp;
	if (udp_hdr(skb, &family, &l4off, &udp, 0) < 0)
		return;
	int tracked = st && (st->flags & SK_DNS) && st->dns_family == family;
	if (!tracked && udp.dest != bpf_htons(DNS_PORT))
		return;
	__u64 plen = bpf_ntohs(udp.len);
	if (plen < sizeof(udp) + 12) // no room for a DNS header
		return;
	plen -= sizeof(udp);

	struct dns_query_rec *e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		count(STAT_QUERY_LOST);
		return;
	}
	dns_head(skb, &e->h, family, &udp, plen, DNS_QUERY);
	if (tracked) {
		e->h.dport = DNS_PORT;
		__builtin_memcpy(e->h.daddr, st->dns_addr, sizeof(e->h.daddr));
	}
	__u64 n = plen;
	if (n > QUERY_MAX)
		n = QUERY_MAX;
	n = ((n - 1) & (QUERY_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, l4off + sizeof(udp), e->data, n) < 0) {
		bpf_ringbuf_discard(e, 0);
		count(STAT_DNS_ERRORS);
		return;
	}
	e->h.len = n;
	bpf_ringbuf_submit(e, 0);
}

// first_datagram counts a connected UDP flow when its socket sends its
// first datagram. Two CPUs sending the socket's first datagrams at once
// both see the flag: the exchange lets one of them count.
static __always_inline void first_datagram(struct __sk_buff *skb, struct sock_state *st)
{
	__u64 flags = st->flags;
	if (!(flags & SK_PENDING))
		return;
	if (!__sync_bool_compare_and_swap(&st->flags, flags, flags & ~SK_PENDING))
		return;
	struct flow_key k = st->key;
	COUNT_FLOW(skb, &k, st->gid, st->tgid, st->hook);
}

// From the kernel's UAPI and net/tcp_states.h.
#define SOCK_DGRAM 2
#define TCP_ESTABLISHED 1 // a connected UDP socket's state

// udp_dest reads where a UDP datagram goes (family, address, port) into
// k: from the headers in place when they are in the linear data (they
// are, for a datagram a UDP socket sends: the egress hook runs before
// fragmentation), else through l4_hdr (IPv6 extension headers). -1 when
// the packet is no UDP datagram.
static __always_inline int udp_dest(struct __sk_buff *skb, struct flow_key *k)
{
	__u8 *b = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if ((void *)(b + 20) <= end && (b[0] >> 4) == 4 && b[9] == IPPROTO_UDP &&
	    !(b[6] & 0x1f) && !b[7]) { // the first fragment
		__u8 *udp = b + ((b[0] & 0xf) * 4 & 0x3c);
		if ((void *)(udp + 4) <= end) {
			k->family = 4;
			__builtin_memcpy(k->addr, b + 16, 4);
			k->port = ((__u16)udp[2] << 8) | udp[3];
			return 0;
		}
	} else if ((void *)(b + 44) <= end && (b[0] >> 4) == 6 && b[6] == IPPROTO_UDP) {
		k->family = 6;
		__builtin_memcpy(k->addr, b + 24, 16);
		k->port = ((__u16)b[42] << 8) | b[43];
		return 0;
	}
	__u8 family, proto;
	__u32 l4off;
	__be16 port;
	if (l4_hdr(skb, &family, &proto, &l4off, 0, k->addr) < 0 || proto != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, l4off + 2, &port, 2) < 0)
		return -1;
	k->family = family;
	k->port = bpf_ntohs(port);
	return 0;
}

// same_dest is whether flows a and b go to the same address and port.
static __always_inline int same_dest(const struct flow_key *a, const struct flow_key *b)
{
	return a->port == b->port && a->family == b->family &&
	       *(__u64 *)a->addr == *(__u64 *)b->addr && *(__u64 *)(a->addr + 8) == *(__u64 *)(b->addr + 8);
}

// count_repeat counts a datagram of process tgid to k's destination in
// the socket's slot, when its slot of the current slot map is for that;
// 0 otherwise.
static __always_inline int count_repeat(struct sock_state *st, struct flow_key *k, __u32 tgid)
{
	__u32 zero = 0, idx = st->slot;
	if (!st->slot_gen || !idx)
		return 0;
	void *m = bpf_map_lookup_elem(&slots, &zero);
	if (!m)
		return 0;
	struct slot *s = bpf_map_lookup_elem(m, &idx);
	if (!s || s->gen != st->slot_gen || s->c.tgid != tgid || !same_dest(&s->c.key, k))
		return 0;
	__sync_fetch_and_add(&s->c.hits, 1);
	s->c.last_ns = bpf_ktime_get_coarse_ns();
	return 1;
}

// take_slot gives the socket a slot of the current slot map for flow k,
// which its datagram just counted in the flow map: one slot a socket per
// interval, none when they are all taken.
static __always_inline void take_slot(struct sock_state *st, struct flow_key *k, __u32 gid, __u32 tgid)
{
	__u32 zero = 0;
	void *m = bpf_map_lookup_elem(&slots, &zero);
	if (!m)
		return;
	struct slot *h = bpf_map_lookup_elem(m, &zero);
	if (!h)
		return;
	__u64 gen = h->gen;
	if (!gen || gen == st->slot_gen)
		return;
	__u32 idx = __sync_fetch_and_add(&h->c.hits, 1) + 1;
	if (idx >= SLOTS)
		return;
	struct slot *s = bpf_map_lookup_elem(m, &idx);
	if (!s)
		return;
	start_count(&s->c, k, gid, tgid);
	__sync_lock_test_and_set(&s->gen, gen);
	st->slot = idx;
	__sync_lock_test_and_set(&st->slot_gen, gen); // after the slot
}

// udp_unconnected counts a datagram of an unconnected UDP socket at the
// egress packet (udp_at_egress), as the sendmsg programs count a
// sendmsg(): one hit a datagram, on the flow of the socket's owner (the
// UID nftables' meta skuid matches), the current task's cgroup, process
// name, GID and process id (the egress hook of a UDP datagram runs in
// the sending task, inside its sendmsg()), and the destination the
// datagram leaves with, after any DNAT in the output path. A repeat (same
// process, same destination) goes to the socket's slot (st: its state,
// NULL when it has none). It copies a DNS query (a datagram to port 53).
static __always_inline void udp_unconnected(struct __sk_buff *skb, struct sock_state *st)
{
	struct flow_key k = {};
	if (udp_dest(skb, &k) < 0)
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	// The repeat first, and out at once (a DNS query goes the long way,
	// to be copied).
	if (__builtin_expect(aggregate && st && k.port != DNS_PORT && count_repeat(st, &k, tgid), 1))
		return;
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct sock *sk = kskb->sk;
	if (!sk)
		return;
	__u32 gid = task->cred->gid.val;
	k.uid = sk->sk_uid.val;
	k.proto = IPPROTO_UDP;
	k.cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	__builtin_memcpy(k.comm, task->group_leader->comm, TASK_COMM_LEN);
	COUNT_FLOW(skb, &k, gid, tgid, HOOK_EGRESS_UDP);
	if (k.port != DNS_PORT) {
		if (aggregate && st)
			take_slot(st, &k, gid, tgid);
		return;
	}
	dns_query(skb, 0);
}

// names passes a TCP segment on to the name check's learning program
// (names_prog), which returns the verdict (it refuses nothing); with an
// empty slot it returns here and the segment passes.
static __always_inline int names(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &names_prog, 0);
	return 1;
}

// egress_out runs on every packet leaving the cgroup. It counts a
// connected UDP flow when its socket sends its first datagram, copies
// DNS queries, and passes TCP segments with data to the name check's
// learning program. A TCP segment without data leaves on its headers
// read in place; a UDP datagram of a socket with nothing to do (neither
// flag) at the first test after finding its state.
SEC("cgroup_skb/egress")
int egress_out(struct __sk_buff *skb)
{
	int tcp = tcp_kind(skb);
	if (tcp == TCP_BARE)
		return 1;
	if (tcp == TCP_DATA) {
		// A socket past its first bytes (a bulk transfer's every
		// segment) leaves without the tail call and the name
		// check's storage lookup.
		if (tcp_past_name(skb))
			return 1;
		return names(skb);
	}
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	// Only UDP sockets get a state (from the connect and sendmsg
	// programs, or below): the lookup needs no full-socket test and
	// protocol read before it (the helper tests the socket itself).
	struct sock_state *st = bpf_sk_storage_get(&socks, sk, 0, 0);
	if (st) {
		if (!udp_at_egress || sk->state == TCP_ESTABLISHED) {
			if (!st->flags)
				return 1;
			first_datagram(skb, st);
			if (st->flags & SK_DNS)
				dns_query(skb, st);
			return 1;
		}
	} else {
		sk = bpf_sk_fullsock(sk);
		if (!sk)
			return 1;
		if (sk->protocol == IPPROTO_TCP)
			return names(skb); // headers the in-place read could not tell
		if (sk->protocol != IPPROTO_UDP)
			return 1;
		if (sk->type != SOCK_DGRAM) {
			// A raw socket of protocol UDP: no UDP socket (no
			// connect or sendmsg program runs for it) and no state;
			// its DNS queries are known by their port.
			dns_query(skb, 0);
			return 1;
		}
		// A UDP socket's first datagram with no state yet: sent
		// unconnected (udp_at_egress, below), or from a socket from
		// before the programs were attached, whose DNS query is known
		// by its port. Afterwards the socket's packets take the short
		// way (a later connect() or sendmsg() to port 53 marks it).
		st = bpf_sk_storage_get(&socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!udp_at_egress || sk->state == TCP_ESTABLISHED) {
			dns_query(skb, 0);
			return 1;
		}
	}
	// udp_at_egress, a socket not connected (never, or disconnected): the
	// datagram is the attempt; a flow held for a connect that sent
	// nothing stays uncounted.
	udp_unconnected(skb, st);
	return 1;
}

// maybe_dns_answer is a quick look at a received packet: 0 when it is
// certainly no DNS answer (not UDP, or a UDP source port other than 53, read
// in place), 1 when the full parse must decide.
static __always_inline int maybe_dns_answer(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *b = data;
	if ((void *)(b + 10) > end)
		return 1;
	__u32 off = 40; // IPv6: the fixed header
	if ((b[0] >> 4) == 4) {
		if (b[9] != IPPROTO_UDP) // also in every fragment of a UDP datagram
			return 0;
		off = (b[0] & 0xf) * 4;
	} else {
		if (b[6] != IPPROTO_UDP) // next header: the full parse walks extension headers
			return ip6_ext(b[6]);
	}
	__be16 *sport = data + off;
	if ((void *)(sport + 1) > end)
		return 1; // not in the linear part: let the full parse read it
	return *sport == bpf_htons(DNS_PORT);
}

// egress_dns copies DNS answers (UDP from port 53) received by sockets of the
// cgroup, with the IP addresses and the receiving socket's UID and cookie.
SEC("cgroup_skb/ingress")
int egress_dns(struct __sk_buff *skb)
{
	if (!maybe_dns_answer(skb))
		return 1;
	__u8 family;
	__u32 l4off;
	struct udphdr udp;
	if (udp_hdr(skb, &family, &l4off, &udp, 0) < 0 || udp.source != bpf_htons(DNS_PORT))
		return 1;
	__u64 plen = bpf_ntohs(udp.len);
	if (plen <= sizeof(udp))
		return 1;
	plen -= sizeof(udp);

	struct dns_answer_rec *e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		count(STAT_DNS_LOST);
		return 1;
	}
	dns_head(skb, &e->h, family, &udp, plen, DNS_ANSWER);
	__u64 n = plen;
	if (n > DNS_MAX)
		n = DNS_MAX;
	n = ((n - 1) & (DNS_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, l4off + sizeof(udp), e->data, n) < 0) {
		bpf_ringbuf_discard(e, 0);
		count(STAT_DNS_ERRORS);
		return 1;
	}
	e->h.len = n;
	bpf_ringbuf_submit(e, 0);
	return 1;
}
