package coverage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Bounds on what a scan reads, so that a huge or looping file tree (a
// user's crontab is written by that user) cannot exhaust the command.
const (
	maxFileSize = 1 << 20 // bytes read of one file
	maxDirSize  = 10000   // entries read of one directory
	maxLinks    = 40      // symbolic links followed for one path
)

var errMasked = errors.New("masked")

// files reads a host's files under a root directory: paths are given as
// on the host ("/etc/crontab") and symbolic links resolve inside the root,
// so a copy of a host (or a test's fixture) reads like the host itself.
type files struct{ root string }

func (f files) real(hostPath string) string {
	if f.root == "" || f.root == "/" {
		return hostPath
	}
	return filepath.Join(f.root, hostPath)
}

// resolve follows the symbolic links of p inside the root and returns the
// host path they lead to; a path that does not exist resolves to itself.
func (f files) resolve(p string) (string, error) {
	parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur, links := "/", 0
	for len(parts) > 0 {
		name := parts[0]
		parts = parts[1:]
		if name == "" {
			continue
		}
		next := path.Join(cur, name)
		fi, err := os.Lstat(f.real(next))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(f.real(next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		parts = append(strings.Split(target, "/"), parts...)
	}
	return cur, nil
}

// read returns a file's content, at most maxFileSize bytes; a file masked
// by a link to /dev/null (or empty, as systemd reads it) is errMasked when
// unit is set.
func (f files) read(p string, unit bool) ([]byte, error) {
	rp, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	if unit && rp == "/dev/null" {
		return nil, errMasked
	}
	fh, err := os.Open(f.real(rp))
	if err != nil {
		return nil, bare(err)
	}
	defer fh.Close()
	if fi, err := fh.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes, not read", maxFileSize)
	}
	if unit && len(data) == 0 {
		return nil, errMasked
	}
	return data, nil
}

// stat returns the file information of p, following links.
func (f files) stat(p string) (fs.FileInfo, error) {
	rp, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	return os.Stat(f.real(rp))
}

// list returns the names in directory p, sorted, at most maxDirSize; a
// missing directory has none.
func (f files) list(p string) ([]string, error) {
	rp, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	d, err := os.Open(f.real(rp))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, bare(err)
	}
	defer d.Close()
	names, err := d.Readdirnames(maxDirSize + 1)
	if err != nil && err != io.EOF {
		return nil, bare(err)
	}
	if len(names) > maxDirSize {
		return nil, fmt.Errorf("more than %d entries, not read", maxDirSize)
	}
	sort.Strings(names)
	return names, nil
}

// exists says whether p exists (following links).
func (f files) exists(p string) bool {
	_, err := f.stat(p)
	return err == nil
}

// bare drops the path (under the root) from an error of the os package:
// the caller names the host path.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
