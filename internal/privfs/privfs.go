// Package privfs keeps what holds secrets private to its owner: a
// directory 0700 and a file 0600, whoever created them and whatever the
// umask was. The server's data directory (its database and key) and the
// runner's (its config and credential) are kept so at every start, so that
// a directory the user made beforehand, 0755 by the usual umask, is
// tightened rather than trusted.
package privfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Dir creates the directory path (and its parents, 0700) if needed, and
// makes it 0700 when group or others have any access to it. It returns the
// mode the directory had when it was tightened, 0 when it was already
// private or new. A shared directory such as /tmp (sticky, writable by
// all) is refused: chmod'ing it would break every other user of it.
func Dir(path string) (was fs.FileMode, err error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is not a directory", path)
	}
	mode := fi.Mode()
	if mode&fs.ModeSticky != 0 && mode.Perm()&0o002 != 0 {
		return 0, fmt.Errorf("%s is a directory shared by all users (%s): give a directory of its own, such as %s/dstack", path, mode, path)
	}
	if mode.Perm()&0o077 == 0 {
		return 0, nil
	}
	if err := os.Chmod(path, mode.Perm()&0o700|0o700); err != nil {
		return 0, fmt.Errorf("make %s private (chmod 700): %w", path, err)
	}
	return mode.Perm(), nil
}

// File makes the file path 0600 when group or others have any access to it
// (execute bits dropped too). A missing file is not an error. It returns the
// mode the file had when it was tightened, 0 otherwise.
func File(path string) (was fs.FileMode, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o177 == 0 {
		return 0, nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return 0, fmt.Errorf("make %s private (chmod 600): %w", path, err)
	}
	return fi.Mode().Perm(), nil
}

// CreateFile creates the file path empty with mode 0600 if it does not
// exist, and tightens it as File does if it does: a program that creates the
// file later with its own mode (SQLite, for one) then finds it private.
func CreateFile(path string) (was fs.FileMode, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return 0, f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return 0, err
	}
	return File(path)
}
