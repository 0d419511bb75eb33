// Package usagetest checks that the README's usage lines of a command
// tree list every flag its commands take, and nothing else, so that the
// README cannot drift from the code.
package usagetest

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Usage is one usage line of the README: the command's path after the
// tool's name ("" for the tool itself) and the flags it lists.
type Usage struct {
	Command string
	Flags   []string
}

var flagRE = regexp.MustCompile(`(?:^|[\s\[|(])(--?[a-z][a-z0-9-]*)`)

// Parse reads the usage lines of tool from the ```sh blocks of a README:
// a line that starts with the tool's name, and the indented lines that
// continue it. The command is the words after the tool up to the first
// that is not a plain word; the flags are every --flag and -f it names.
func Parse(readme, tool string) []Usage {
	var out []Usage
	inSh, inLine := false, false
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(line, "```") {
			inSh, inLine = strings.TrimSpace(line) == "```sh", false
			continue
		}
		code, _, _ := strings.Cut(line, "#") // comments are not usage
		switch {
		case !inSh:
			continue
		case strings.HasPrefix(code, tool+" ") || code == tool:
			out = append(out, Usage{Command: commandOf(strings.Fields(code)[1:])})
			inLine = true
		case inLine && strings.HasPrefix(code, " ") && strings.TrimSpace(code) != "":
		default:
			inLine = false
			continue
		}
		u := &out[len(out)-1]
		for _, m := range flagRE.FindAllStringSubmatch(code, -1) {
			if !slices.Contains(u.Flags, m[1]) {
				u.Flags = append(u.Flags, m[1])
			}
		}
	}
	return out
}

func commandOf(words []string) string {
	var path []string
	for _, w := range words {
		if !regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(w) {
			break
		}
		path = append(path, w)
	}
	return strings.Join(path, " ")
}

// Check compares the README's usage lines of root with root's flags:
//   - the tool's own line lists its persistent flags;
//   - every command that is not hidden has a line, which lists each of its
//     own flags that is not hidden, and names no flag the command lacks
//     (its own or inherited);
//   - each command's Use line names no flag the command lacks.
func Check(t *testing.T, readmePath string, root *cobra.Command) {
	t.Helper()
	data, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	usages := map[string]Usage{}
	for _, u := range Parse(string(data), root.Name()) {
		if _, dup := usages[u.Command]; dup {
			t.Errorf("README: two usage lines for %q", strings.TrimSpace(root.Name()+" "+u.Command))
		}
		usages[u.Command] = u
	}
	if u, ok := usages[""]; !ok {
		t.Errorf("README: no usage line for %s itself (its flags for every command)", root.Name())
	} else {
		compare(t, root.Name(), u, root.PersistentFlags(), root)
	}
	for _, c := range commands(root) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		name := root.Name() + " " + path
		u, ok := usages[path]
		if !ok {
			t.Errorf("README: no usage line for %s", name)
			continue
		}
		compare(t, name, u, c.LocalNonPersistentFlags(), c)
		for _, m := range flagRE.FindAllStringSubmatch(c.Use, -1) {
			if lookup(c, m[1]) == nil {
				t.Errorf("%s: its Use line %q names %s, which it does not take", name, c.Use, m[1])
			}
		}
	}
	for cmd := range usages {
		if cmd != "" && findCommand(root, cmd) == nil {
			t.Errorf("README: a usage line for %s %s, which is no command", root.Name(), cmd)
		}
	}
}

// compare checks that u lists every visible flag of own, and only flags
// cmd takes.
func compare(t *testing.T, name string, u Usage, own *pflag.FlagSet, cmd *cobra.Command) {
	t.Helper()
	own.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		if !slices.Contains(u.Flags, "--"+f.Name) && (f.Shorthand == "" || !slices.Contains(u.Flags, "-"+f.Shorthand)) {
			t.Errorf("README: the usage line of %s lacks --%s (%s)", name, f.Name, f.Usage)
		}
	})
	for _, fl := range u.Flags {
		if lookup(cmd, fl) == nil {
			t.Errorf("README: the usage line of %s lists %s, which it does not take", name, fl)
		}
	}
}

// lookup finds a flag of cmd (its own or inherited) by --name or -s.
func lookup(cmd *cobra.Command, flag string) *pflag.Flag {
	fs := cmd.Flags()
	if cmd.HasParent() {
		fs.AddFlagSet(cmd.InheritedFlags())
	} else {
		fs.AddFlagSet(cmd.PersistentFlags())
	}
	if name, ok := strings.CutPrefix(flag, "--"); ok {
		if f := fs.Lookup(name); f != nil && !f.Hidden {
			return f
		}
		return nil
	}
	if f := fs.ShorthandLookup(strings.TrimPrefix(flag, "-")); f != nil && !f.Hidden {
		return f
	}
	return nil
}

// findCommand finds the visible command at path ("a b": subcommand b of
// a) under root.
func findCommand(root *cobra.Command, path string) *cobra.Command {
	cmd := root
	for _, name := range strings.Fields(path) {
		var next *cobra.Command
		for _, c := range cmd.Commands() {
			if c.Name() == name && !c.Hidden {
				next = c
			}
		}
		if next == nil {
			return nil
		}
		cmd = next
	}
	return cmd
}

// commands are root's visible commands and their subcommands, at any
// depth (not help and completion).
func commands(root *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		out = append(out, c)
		out = append(out, commands(c)...)
	}
	return out
}
