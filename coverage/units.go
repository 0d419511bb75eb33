package coverage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

// unitFile is a unit as systemd would load it: its fragment (the first
// file of that name in the unit directories, or its template's) and its
// drop-ins, in order.
type unitFile struct {
	name string
	file string // the fragment, as a host path
	opts []*unit.UnitOption
}

// unitDirs returns the configured unit directories that exist, each once
// (on a merged-/usr host /lib and /usr/lib are one), in priority order.
func (s *scanner) unitDirs() []string {
	var out, seen []string
	for _, d := range s.o.UnitDirs {
		r, err := s.fs.resolve(d)
		if err != nil || slices.Contains(seen, r) {
			continue
		}
		if fi, err := s.fs.stat(d); err != nil || !fi.IsDir() {
			continue
		}
		seen = append(seen, r)
		out = append(out, d)
	}
	return out
}

// splitUnit splits "foo@bar.timer" into the template "foo@.timer" and the
// instance "bar"; a name that is no instance has no template.
func splitUnit(name string) (template, instance string) {
	at := strings.IndexByte(name, '@')
	dot := strings.LastIndexByte(name, '.')
	if at < 0 || dot < at || dot == at+1 {
		return "", ""
	}
	return name[:at+1] + name[dot:], name[at+1 : dot]
}

// loadUnit reads a unit's fragment and drop-ins; errMasked when a link to
// /dev/null (or an empty file) masks it, fs.ErrNotExist-like when no
// fragment exists.
func (s *scanner) loadUnit(name string, dirs []string) (*unitFile, error) {
	template, _ := splitUnit(name)
	u := &unitFile{name: name}
	var data []byte
	for _, n := range []string{name, template} {
		if n == "" || u.file != "" {
			continue
		}
		for _, d := range dirs {
			p := path.Join(d, n)
			b, err := s.fs.read(p, true)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err // masked, unreadable, too large
			}
			u.file, data = p, b
			break
		}
	}
	if u.file == "" {
		return nil, fmt.Errorf("%s: no unit file", name)
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", u.file, err)
	}
	u.opts = opts
	for _, p := range s.dropIns(name, template, dirs) {
		b, err := s.fs.read(p, false)
		if err != nil {
			continue // an unreadable or empty drop-in changes nothing
		}
		opts, err := unit.DeserializeOptions(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		u.opts = append(u.opts, opts...)
	}
	return u, nil
}

// dropIns lists NAME.d/*.conf (and the template's) of every directory: a
// file name in a directory of higher priority hides the same name below;
// they apply in the order of their names.
func (s *scanner) dropIns(name, template string, dirs []string) []string {
	byName := map[string]string{}
	for _, d := range dirs {
		for _, n := range []string{template, name} {
			if n == "" {
				continue
			}
			dir := path.Join(d, n+".d")
			names, _ := s.fs.list(dir)
			for _, f := range names {
				if _, ok := byName[f]; !ok && strings.HasSuffix(f, ".conf") {
					byName[f] = path.Join(dir, f)
				}
			}
		}
	}
	keys := make([]string, 0, len(byName))
	for k := range byName {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = byName[k]
	}
	return out
}

// wantedUnits returns the units linked in some *.wants or *.requires
// directory: those that start without being asked (enabled, or pulled in
// by their package).
func (s *scanner) wantedUnits(dirs []string) map[string]bool {
	out := map[string]bool{}
	for _, d := range dirs {
		names, _ := s.fs.list(d)
		for _, n := range names {
			if !strings.HasSuffix(n, ".wants") && !strings.HasSuffix(n, ".requires") {
				continue
			}
			links, _ := s.fs.list(path.Join(d, n))
			for _, l := range links {
				out[l] = true
			}
		}
	}
	return out
}

// specifiers expands the unit specifiers a timer's Unit= or a service's
// lines use: %i %I (instance), %n (full name), %N (without suffix),
// %p (prefix), %%.
func specifiers(v, name string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	_, inst := splitUnit(name)
	base := strings.TrimSuffix(name, path.Ext(name))
	prefix, _, _ := strings.Cut(base, "@")
	r := strings.NewReplacer("%%", "%", "%i", inst, "%I", inst, "%n", name, "%N", base, "%p", prefix)
	return r.Replace(v)
}

// parseBool reads a systemd boolean.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", v)
}

// serviceCgroup is the cgroup v2 path (from the root of the hierarchy) of
// a system service: its Slice= (default system.slice; an instance of a
// template goes to system-PREFIX.slice within it) and its name.
func serviceCgroup(service, slice string) string {
	if slice == "" {
		slice = "system.slice"
		if template, _ := splitUnit(service); template != "" {
			prefix, _, _ := strings.Cut(template, "@")
			slice = "system-" + strings.ReplaceAll(prefix, "-", `\x2d`) + ".slice"
		}
	}
	return slicePath(slice) + "/" + service
}

// slicePath turns a slice name into its cgroup path: a-b.slice is
// /a.slice/a-b.slice; -.slice is the root.
func slicePath(slice string) string {
	base := strings.TrimSuffix(slice, ".slice")
	if base == "-" || base == "" {
		return ""
	}
	var p strings.Builder
	parts := strings.Split(base, "-")
	for i := range parts {
		p.WriteString("/" + strings.Join(parts[:i+1], "-") + ".slice")
	}
	return p.String()
}
