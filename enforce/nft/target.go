package nft

import (
	"fmt"
	"strings"

	"github.com/egresskit/egress/store"
)

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

// Flag is the --netns flag that picks the target ("without --netns" for
// the host's own namespace).
func (t Target) Flag() string {
	switch p := t.Path(); {
	case p == "":
		return "without --netns"
	case strings.HasPrefix(p, "/run/netns/") && !strings.Contains(p[len("/run/netns/"):], "/"):
		return "--netns " + p[len("/run/netns/"):]
	default:
		return "--netns " + p
	}
}

// Elsewhere says which other targets hold generations of table, and the
// flag that picks each; "" for none. Generations belong to a target: a
// command that finds none for its own says where they are.
func Elsewhere(table string, others []store.TargetGenerations) string {
	if len(others) == 0 {
		return ""
	}
	parts := make([]string, len(others))
	for i, o := range others {
		t := Target{Netns: o.Target}
		parts[i] = fmt.Sprintf("%s (%d generations, current %d; %s)", t, o.Generations, o.Current, t.Flag())
	}
	return "generations of table inet " + table + " are recorded for " + strings.Join(parts, ", ")
}
