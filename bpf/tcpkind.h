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

// NAME_BYTES is how many bytes of a connection's first data the name
// check gathers at most before it decides (namecheck.c's NC_BUF): a
// segment that starts past them can never bring it a byte.
#define NAME_BYTES 4096

// tcp_past_name says (1) that a TCP segment with data, whose headers
// tcp_kind read in place, certainly has nothing for the name check's
// learning program (namecheck.c, learn_all), so that egress.c can leave
// it without the tail call; 0 when it may have. That program reads a
// segment only when it is the socket's first data (learn_first: the
// socket's data_segs_out is at most the packet's gso_segs) or when the
// socket still gathers its first bytes (pending_seg), which takes only a
// segment whose first byte lies within the first NAME_BYTES bytes of
// the stream: gather uses a segment that holds the byte after those
// held, and holds fewer than NAME_BYTES. The stream's start comes from
// the socket: the initial sequence number of a connecting socket (the
// only sockets whose first data is gathered) is snd_una - bytes_acked
// (its SYN counts 1 once acknowledged, and every acknowledgement adds to
// both), and a segment starting at seq holds no byte the name check
// takes when seq is more than NAME_BYTES past it (its first data byte,
// at ISN + 1, or the SYN's own data with TCP Fast Open). Retransmissions
// and GSO packets count in data_segs_out but not in the sequence: a
// ClientHello gathered over many segments, sent again, is still passed.
// No helper but bpf_tcp_sock; the socket's fields are read in place.
static __always_inline int tcp_past_name(struct __sk_buff *skb)
{
	__u8 *b = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off = 40;
	if ((void *)(b + 1) > end)
		return 0;
	if ((b[0] >> 4) == 4)
		off = (b[0] & 0xf) * 4;
	__u8 *th = b + (off & 0x3f);
	if ((void *)(th + 8) > end)
		return 0;
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	if (!tp)
		return 0;
	__u32 segs = skb->gso_segs;
	if (tp->data_segs_out <= (segs ? segs : 1))
		return 0; // the first data, or sent before it
	__u32 seq = ((__u32)th[4] << 24) | ((__u32)th[5] << 16) | ((__u32)th[6] << 8) | th[7];
	__u32 isn = tp->snd_una - (__u32)tp->bytes_acked;
	return seq - isn > NAME_BYTES;
}

#endif
