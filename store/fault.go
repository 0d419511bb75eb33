package store

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// A damaged file is an error that names it, never a crash. bbolt reads
// pages straight from its memory map: a page number beyond the file makes
// a read fault (SIGSEGV or SIGBUS, which kill a Go process), a garbled page
// makes bbolt panic or index out of range. Every transaction runs with
// debug.SetPanicOnFault, which turns the fault into a panic, and recovers
// it into ErrCorrupt.
//
// After that the handle is abandoned, not closed: the panic may have left
// bbolt's own locks held, and Close would wait on them for ever. Its file
// lock is released and its file closed instead; the memory map is left
// behind (it holds the file open, so closing alone would keep the lock). So that a long-running process does not leave
// one behind at every flush, the Store remembers the fault and answers
// every later call with the same error, without opening the file again.

// ErrCorrupt means the store file faulted or bbolt panicked while reading
// it: the file is damaged.
var ErrCorrupt = errors.New("the file is corrupt")

// handle is one opening of the file: bbolt's DB and the file under it.
type handle struct {
	db   *bolt.DB
	file *os.File
}

// openFile is bbolt's OpenFile hook: it keeps the file.
func (h *handle) openFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	h.file = f
	return f, err
}

// faulted is the error of an earlier fault, or nil.
func (s *Store) faulted() error {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.fault
}

// corrupted turns the recovered panic r of a transaction on h into the
// store's lasting error, and abandons h.
func (s *Store) corrupted(op string, h *handle, r any) error {
	if h.file != nil {
		unlockFile(h.file)
		_ = h.file.Close() // bbolt's DB is dropped
	}
	what := fmt.Sprint(r)
	if re, ok := r.(runtime.Error); ok {
		what = re.Error()
	}
	err := fmt.Errorf("%s store %s: %w (%s); move it away and restore a copy, or pass another --db", op, s.path, ErrCorrupt, what)
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.fault == nil {
		s.fault = err
	}
	return s.fault
}

// dataError is a fault in what the file holds (a record that does not
// decode, a key of the wrong size, a missing bucket): view and update name
// the file.
type dataError struct{ err error }

func (e *dataError) Error() string { return e.err.Error() }
func (e *dataError) Unwrap() error { return e.err }

func badData(format string, a ...any) error { return &dataError{fmt.Errorf(format, a...)} }

// named adds the file's name to an error in its contents. bbolt's
// incompatible value (a bucket where a value should be, or the reverse)
// and a missing bucket in a migrated file are such faults too.
func (s *Store) named(op string, err error) error {
	var de *dataError
	if errors.As(err, &de) || errors.Is(err, bolterrors.ErrIncompatibleValue) || errors.Is(err, bolterrors.ErrBucketNotFound) {
		return fmt.Errorf("%s store %s: %w: %w", op, s.path, ErrCorrupt, err)
	}
	return err
}
