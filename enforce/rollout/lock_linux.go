//go:build linux

package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockPath is the file lock beside the store that puts every change of
// our tables in one order: apply, reconcile --apply, confirm, rollback,
// remove, restore and the guard's rollback each hold it from the moment they read
// the generations until the kernel and the store agree again.
func LockPath(db string) string { return db + ".lock" }

// DefaultLockWait is how long a command waits for another one to finish.
const DefaultLockWait = 30 * time.Second

// ErrLocked means another apply, rollback or restore kept the lock for the
// whole wait.
var ErrLocked = errors.New("another apply, rollback, restore or rollback guard is running")

// lockApplies takes the lock beside the store db, waiting up to wait (for
// ever when wait < 0, until ctx ends). The holder's pid is written in the
// file, for the message of the next one that waits. The lock is an flock:
// the kernel lets go of it when its holder dies, however it dies.
func lockApplies(ctx context.Context, db string, wait time.Duration, log *slog.Logger) (unlock func(), err error) {
	path := LockPath(db)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	fd := int(f.Fd())
	start, delay, told := time.Now(), 5*time.Millisecond, false
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		holder := lockHolder(path)
		if wait >= 0 && time.Since(start) >= wait {
			f.Close()
			return nil, fmt.Errorf("%w: %s is held%s for more than %s", ErrLocked, path, holder, wait)
		}
		if !told {
			log.Warn("waiting for the lock"+holder+": "+ErrLocked.Error(), "lock", path)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = f.Truncate(0)
		_ = unix.Flock(fd, unix.LOCK_UN)
		f.Close()
	}, nil
}

// lockHolder names the process that holds the lock, when it wrote its pid.
func lockHolder(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return ""
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if len(cmd) == 0 {
		return fmt.Sprintf(" by pid %d", pid)
	}
	return fmt.Sprintf(" by pid %d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
}
