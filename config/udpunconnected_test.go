package config

import (
	"strings"
	"testing"
)

// TestUDPUnconnected: udp_unconnected is sendmsg by default, egress from
// the file or the environment, and anything else is an error that names
// the key. (The environment comes last: t.Setenv lasts to the end.)
func TestUDPUnconnected(t *testing.T) {
	c, err := load(t, "", nil)
	if err != nil || c.UDPUnconnected != UDPUnconnectedSendmsg {
		t.Fatalf("default: %+v, %v; want sendmsg", c, err)
	}
	if c, err = load(t, "udp_unconnected: egress\n", nil); err != nil || c.UDPUnconnected != UDPUnconnectedEgress {
		t.Fatalf("file: %v, %v; want egress", c.UDPUnconnected, err)
	}
	_, err = load(t, "udp_unconnected: skb\n", nil)
	if err == nil || !strings.Contains(err.Error(), "udp_unconnected") || !strings.Contains(err.Error(), `"skb"`) {
		t.Fatalf("bad value: %v, want an error naming udp_unconnected and the value", err)
	}
	if c, err = load(t, "", map[string]string{"EGRESS_UDP_UNCONNECTED": "egress"}); err != nil || c.UDPUnconnected != UDPUnconnectedEgress {
		t.Fatalf("env: %v, %v; want egress", c.UDPUnconnected, err)
	}
}
