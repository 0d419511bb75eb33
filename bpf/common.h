// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// What the eBPF programs (egress.c, follow.c, dnspolicy.c, namecheck.c)
// share: the headers, the counters, and finding the IP, transport and UDP
// headers of a packet that starts at the IP header (cgroup_skb programs).

#ifndef EGRESS_COMMON_H
#define EGRESS_COMMON_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DNS_PORT 53

// FOLLOWED_MAX bounds the follower's name-checked destinations (the
// followed map, shared by follow.c and namecheck.c through a pin): one
// per (uid, address, TCP port) of the two follow sets of 65536 elements.
#define FOLLOWED_MAX 131072

// bump adds one to counter idx of an array map of __u64 counters.
static __always_inline void bump(void *counters, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(counters, &idx);
	if (v)
		*v += 1;
}

// ip_hdr reads what the programs need of an IPv4 or IPv6 header: the
// family (4 or 6), the next protocol, where the header after it starts,
// and the addresses when asked for (16 bytes each, IPv4 in the first 4).
// It returns -1 for anything else, and for a fragment that is not the
// first (it has no transport header). It stops at the first IPv6 header:
// the programs call l4_hdr, which walks the extension headers.
static __always_inline int ip_hdr(struct __sk_buff *skb, __u8 *family, __u8 *proto, __u32 *l4off,
				  __u8 saddr[16], __u8 daddr[16])
{
	__u8 vbyte;
	if (bpf_skb_load_bytes(skb, 0, &vbyte, 1) < 0)
		return -1;
	if ((vbyte >> 4) == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff)) // no transport header in a later fragment
			return -1;
		*family = 4;
		*proto = ip.protocol;
		*l4off = ip.ihl * 4;
		if (saddr) {
			__builtin_memset(saddr, 0, 16);
			__builtin_memcpy(saddr, &ip.saddr, 4);
		}
		if (daddr) {
			__builtin_memset(daddr, 0, 16);
			__builtin_memcpy(daddr, &ip.daddr, 4);
		}
		return 0;
	}
	if ((vbyte >> 4) == 6) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		*family = 6;
		*proto = ip6.nexthdr;
		*l4off = sizeof(ip6);
		if (saddr)
			__builtin_memcpy(saddr, &ip6.saddr, 16);
		if (daddr)
			__builtin_memcpy(daddr, &ip6.daddr, 16);
		return 0;
	}
	return -1;
}

#define MAX_IP6_EXT 4 // IPv6 extension headers walked

// ip6_ext is whether proto is an IPv6 extension header l4_hdr walks:
// hop-by-hop, routing, fragment, destination options, AH.
static __always_inline int ip6_ext(__u8 proto)
{
	return proto == 0 || proto == 43 || proto == 44 || proto == 60 || proto == 51;
}

// l4_hdr is ip_hdr past IPv6 extension headers (a user with CAP_NET_RAW
// may add them to hide a transport header from a parser that stops at
// the first): *proto is the transport protocol and *l4off where its
// header starts. It returns -1 when it cannot tell: a fragment that is
// not the first, a chain longer than MAX_IP6_EXT. Every program finds the
// transport header through it.
static __always_inline int l4_hdr(struct __sk_buff *skb, __u8 *family, __u8 *proto, __u32 *l4off,
				  __u8 saddr[16], __u8 daddr[16])
{
	if (ip_hdr(skb, family, proto, l4off, saddr, daddr) < 0)
		return -1;
	if (*family != 6)
		return 0;
	for (int i = 0; i < MAX_IP6_EXT && ip6_ext(*proto); i++) {
		__u8 h[2];
		if (bpf_skb_load_bytes(skb, *l4off, h, 2) < 0)
			return -1;
		if (*proto == 44) { // fragment header: only the first fragment has a transport header
			__u16 fo;
			if (bpf_skb_load_bytes(skb, *l4off + 2, &fo, 2) < 0 || (bpf_ntohs(fo) & 0xfff8))
				return -1;
			*l4off += 8;
		} else if (*proto == 51) { // AH: its length is in 4-byte units, less 2
			*l4off += ((__u32)h[1] + 2) * 4;
		} else {
			*l4off += ((__u32)h[1] + 1) * 8;
		}
		*proto = h[0];
	}
	return ip6_ext(*proto) ? -1 : 0;
}

// udp_hdr finds the UDP header of an IPv4 or IPv6 datagram, past IPv6
// extension headers (and its source address, when asked for); -1 for any
// other packet.
static __always_inline int udp_hdr(struct __sk_buff *skb, __u8 *family, __u32 *l4off,
				   struct udphdr *udp, __u8 saddr[16])
{
	__u8 proto;
	if (l4_hdr(skb, family, &proto, l4off, saddr, 0) < 0 || proto != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, *l4off, udp, sizeof(*udp)) < 0)
		return -1;
	return 0;
}

#endif
