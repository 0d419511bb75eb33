// kernsock.h: the kernel's socket as a cgroup_skb program reads it from
// the sk_buff (bpf_cast_to_kern_ctx), relocated against the running
// kernel's BTF (CO-RE): plain loads where bpf_get_socket_uid and
// bpf_get_netns_cookie are helper calls. sk_uid is the socket owner's
// kuid, a UID of the initial user namespace. Shared by egress.c and
// dnspolicy.c; only the fields a program reads are relocated.
#ifndef EGRESS_KERNSOCK_H
#define EGRESS_KERNSOCK_H

typedef struct {
	__u32 val;
} kuid_t;

struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	volatile unsigned char skc_state;
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	kuid_t sk_uid;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct sock *sk;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

#endif
