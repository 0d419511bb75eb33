package store

import (
	"slices"
	"strings"
)

// CommLen is the longest process name (comm) the kernel keeps: longer
// names are cut to it.
const CommLen = 15

// ProcessComm is a process name (the kernel's comm) that differs from the
// name of the executable its process ran: a process that named itself
// ("npm view expres", run by node) or a script (comm "man-db", run by
// dash).
type ProcessComm struct {
	Exe  string `json:"exe"`
	Comm string `json:"comm"`
}

// SameName reports whether comm is exe's own name: equal, or exe's name
// cut to CommLen.
func SameName(exe, comm string) bool {
	return exe == comm || len(comm) == CommLen && strings.HasPrefix(exe, comm)
}

// RanAs reports whether a process named comm (as the kernel names it, at
// most CommLen bytes) made the flow's connections: one of its executables
// has that name, or one of its processes had it.
func (f *Flow) RanAs(comm string) bool {
	for _, p := range f.Processes {
		if SameName(p, comm) {
			return true
		}
	}
	return slices.ContainsFunc(f.Comms, func(c ProcessComm) bool { return c.Comm == comm })
}

// ProcessNames are the flow's processes for people: each executable, with
// the names its processes gave themselves where they differ, as in
// "node (npm view expres)".
func ProcessNames(processes []string, comms []ProcessComm) []string {
	out := make([]string, 0, len(processes))
	for _, p := range processes {
		var own []string
		for _, c := range comms {
			if c.Exe == p {
				own = append(own, c.Comm)
			}
		}
		if len(own) > 0 {
			p += " (" + strings.Join(own, ", ") + ")"
		}
		out = append(out, p)
	}
	return out
}
