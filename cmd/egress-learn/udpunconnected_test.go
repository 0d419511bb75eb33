package main

import (
	"log/slog"
	"testing"

	"github.com/egresskit/egress/config"
)

// TestLearnConfigUDPUnconnected: udp_unconnected reaches the probe.
func TestLearnConfigUDPUnconnected(t *testing.T) {
	for mode, want := range map[string]bool{config.UDPUnconnectedSendmsg: false, config.UDPUnconnectedEgress: true} {
		lc, err := learnConfig(&config.Config{Cgroup: "/sys/fs/cgroup/x", UDPUnconnected: mode}, slog.New(slog.DiscardHandler), 0)
		if err != nil {
			t.Fatal(err)
		}
		if lc.Probe.UDPAtEgress != want {
			t.Errorf("udp_unconnected %s: UDPAtEgress %v, want %v", mode, lc.Probe.UDPAtEgress, want)
		}
	}
}
