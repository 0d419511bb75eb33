// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
//
// What the learner's programs (egress.c) and the DNS follower's
// (follow.c) share: the headers, the counters, and finding the IP and UDP
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

// bump adds one to counter idx of an array map of __u64 counters.
static __always_inline void bump(void *counters, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(counters, &idx);
	if (v)
		*v += 1;
}

// ip_hdr reads what the programs need of an IPv4 or IPv6 header: the
// family (4 or 6), the next protocol, where the transport header starts,
// and the addresses when asked for (16 bytes each, IPv4 in the first 4).
// It returns -1 for anything else, and for a fragment that is not the
// first (it has no transport header).
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

// udp_hdr finds the UDP header of an IPv4 or IPv6 datagram (and its
// source address, when asked for); -1 for any other packet.
static __always_inline int udp_hdr(struct __sk_buff *skb, __u8 *family, __u32 *l4off,
				   struct udphdr *udp, __u8 saddr[16])
{
	__u8 proto;
	if (ip_hdr(skb, family, &proto, l4off, saddr, 0) < 0 || proto != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, *l4off, udp, sizeof(*udp)) < 0)
		return -1;
	return 0;
}

#endif
