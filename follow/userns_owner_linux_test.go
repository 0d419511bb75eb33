//go:build linux

package follow

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/internal/lab"
)

// TestUserOwnedNetnsRefused (issue 9, "only for host uids"): a network
// namespace that an unprivileged user made together with a user namespace
// of its own gives its sockets uids of that user namespace (uid 0 for the
// user who mapped itself to root), so the follower, the DNS policy and the
// name check, which all find their namespace through EnforcedNetns, refuse
// to work there; the lab's namespace, owned by the host's user namespace,
// is accepted.
func TestUserOwnedNetnsRefused(t *testing.T) {
	lab.Require(t, "unshare", "sleep")
	ns := lab.NewNetns(t)
	if _, err := EnforcedNetns(nft.Target{Netns: ns.Name}); err != nil {
		t.Fatalf("a namespace of the host's user namespace: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	user := lab.As{UID: 4242, GID: 4242, Netns: ns}
	cmd := user.Command(ctx, "unshare", "--user", "--map-root-user", "--net", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cancel(); <-exited })

	// ip, setpriv and unshare each exec the next: the pid ends up in sleep,
	// in the namespaces unshare made.
	path := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	var st, own unix.Stat_t
	if err := unix.Stat("/run/netns/"+ns.Name, &own); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, func() bool {
		select {
		case <-exited:
			t.Fatal("unshare --user --net exited as uid 4242")
		default:
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
		return strings.HasSuffix(exe, "/sleep") && unix.Stat(path, &st) == nil && st.Ino != own.Ino
	})
	_, err := EnforcedNetns(nft.Target{Netns: path})
	if err == nil || !strings.Contains(err.Error(), "user namespace of its own") {
		t.Errorf("a namespace uid 4242 made with a user namespace of its own: %v", err)
	}
}
