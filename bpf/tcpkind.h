// tcpkind.h: what a TCP segment leaving a cgroup_skb hook is, told from
// its headers read in place (no helper call). Shared by egress.c (which
// passes the segments that may carry data to the name check's learning
// program) and namecheck.c (whose learning program leaves the others).
#ifndef EGRESS_TCPKIND_H
#define EGRESS_TCPKIND_H

enum tcp_kind {
	TCP_UNKNOWN = 0, // not TCP, or not told by the headers in place
	TCP_BARE = 1,    // a TCP segment without data: SYN, ACK, FIN, RST
	TCP_DATA = 2,    // a TCP segment that may carry data
};

// tcp_kind tells a TCP segment from the headers read in place: most
// packets of a host are TCP, and only a segment with data concerns the
// name check's learning. An IPv6 extension header or a header out of the
// linear data says TCP_UNKNOWN (the socket's protocol decides); a TCP
// header whose data offset is out of the linear data, TCP_DATA.
static __always_inline int tcp_kind(struct __sk_buff *skb)
{
	__u8 *b = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off;
	if ((void *)(b + 10) > end)
		return TCP_UNKNOWN;
	if ((b[0] >> 4) == 4) {
		if (b[9] != IPPROTO_TCP)
			return TCP_UNKNOWN;
		off = (b[0] & 0xf) * 4;
	} else if ((b[0] >> 4) == 6 && b[6] == IPPROTO_TCP) {
		off = 40;
	} else {
		return TCP_UNKNOWN;
	}
	__u8 *doff = b + (off & 0x3f) + 12; // TCP data offset, in 4-byte words
	if ((void *)(doff + 1) > end)
		return TCP_DATA; // the name check reads it with a helper
	return skb->len <= (off & 0x3f) + (*doff >> 4) * 4 ? TCP_BARE : TCP_DATA;
}

#endif
