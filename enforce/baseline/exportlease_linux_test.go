//go:build linux

package baseline

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExportTruncatedWhileRead is the attack of a local user who can
// write the export (or the memo): cut it short while an apply reads it.
// A plain mapping of the file then faults (SIGBUS: the apply dies with a
// stack trace); a copy would not, and neither does the leased mapping:
// the truncate waits until the bytes are released, and they stay whole
// meanwhile.
func TestExportTruncatedWhileRead(t *testing.T) {
	for _, c := range []struct {
		name string
		read func(path string) ([]byte, func(), error)
	}{
		{"export", readExportFile},
		{"memo", func(path string) ([]byte, func(), error) {
			data, err := readMemoFile(path)
			return data, func() {}, err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.name)
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
			if err := os.WriteFile(path, want, 0o600); err != nil {
				t.Fatal(err)
			}
			data, release, err := c.read(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(release)
			// Another process truncates the file (an open with O_TRUNC).
			cut := exec.Command("sh", "-c", `: > "$0"`, path)
			if err := cut.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cut.Wait() }()
			t.Cleanup(func() { _ = cut.Process.Kill() })
			if !waitsOnLease(t, path, exited) {
				t.Log("the truncate did not wait: the file was not leased")
			}
			if err := readAll(data, want); err != nil {
				t.Fatalf("the %s's bytes after another process truncated it: %v", c.name, err)
			}
			if c.name == "memo" {
				return // held for the process's life
			}
			release()
			if err := <-exited; err != nil {
				t.Fatalf("truncate: %v", err)
			}
			if st, err := os.Stat(path); err != nil || st.Size() != 0 {
				t.Fatalf("after the release, the truncate went through: size %d, err %v", st.Size(), err)
			}
		})
	}
}

// readAll compares data with want, a fault in data an error.
func readAll(data, want []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fault: %v", r)
		}
	}()
	if !bytes.Equal(data, want) {
		return errors.New("the bytes changed")
	}
	return nil
}

// waitsOnLease waits until /proc/locks shows the lease on path breaking
// (a writer waits on it: true), or until the writer is done (its error put
// back in done: false).
func waitsOnLease(t *testing.T, path string, done chan error) bool {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ino := fmt.Sprintf(":%d ", st.Sys().(*syscall.Stat_t).Ino)
	for {
		locks, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(locks)) {
			if strings.Contains(line, "LEASE  BREAKING") && strings.Contains(line, ino) {
				return true
			}
		}
		select {
		case err := <-done:
			done <- err
			return false
		case <-time.After(time.Millisecond):
		}
	}
}
