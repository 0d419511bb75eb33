//go:build linux

package monitor

import (
	"strings"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// ServiceNamer names the service of a logged packet's socket: sock_diag
// finds the socket by the packet's addresses and ports (the log is read
// while a TCP connect still retries, or a UDP sender still holds its
// socket) and gives its cgroup id, the cgroup tree its path, cut at the
// unit as the plan cuts it. A socket already closed, or one of no
// service, leaves the packet the user's only. The log is rate-limited, so
// this costs a lookup per logged packet, not per packet.
type ServiceNamer struct {
	diag  *sockDiag
	names *cgroupbpf.Names
	depth int
}

// NewServiceNamer opens sock_diag in the target namespace; depth is
// service_depth.
func NewServiceNamer(t nft.Target, depth int) (*ServiceNamer, error) {
	mount, err := cgroupbpf.Mount()
	if err != nil {
		return nil, err
	}
	d, err := openSockDiag(t)
	if err != nil {
		return nil, err
	}
	return &ServiceNamer{diag: d, names: cgroupbpf.NewNames(mount), depth: depth}, nil
}

// Close closes the sock_diag socket.
func (s *ServiceNamer) Close() error {
	if s == nil {
		return nil
	}
	return s.diag.Close()
}

// name fills e.Service when the socket is found in a service.
func (s *ServiceNamer) name(e *LogEntry) {
	if s == nil {
		return
	}
	id := s.diag.cgroupID(e.Proto, e.Src, e.SrcPort, e.Dst, e.Port)
	if id == 0 {
		return
	}
	if p := s.names.Name(id); strings.HasPrefix(p, "/") {
		e.Service = plan.ServiceOf(p, s.depth)
	}
}
