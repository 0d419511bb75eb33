package nft

import "strings"

// Target is the network namespace to act in: "" for the caller's own, a
// name under /run/netns, or a path to a namespace file (/proc/PID/ns/net).
type Target struct {
	Netns string
}

// Path is the namespace file, or "" for the caller's own namespace.
func (t Target) Path() string {
	switch {
	case t.Netns == "":
		return ""
	case strings.Contains(t.Netns, "/"):
		return t.Netns
	}
	return "/run/netns/" + t.Netns
}

// String names the target for messages.
func (t Target) String() string {
	if t.Netns == "" {
		return "this host's network namespace"
	}
	return "network namespace " + t.Path()
}
