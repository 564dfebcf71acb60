// Package codearchive is the format of a run's code, a gzip'd tar, and its
// safe unpacking on a runner; package codearchive/pack packs a project's
// working directory into it (on the CLI's side, honouring ignore files).
//
// Archives are deterministic: entries in name order, modification times,
// owners and the gzip header zeroed, so the same tree always packs to the
// same bytes and the server can store code by content address. Only regular
// files, directories and symbolic links are packed (links as links); other
// kinds of files are skipped. Permission bits are kept.
//
// Unpack writes into a directory and never outside it, through the jobdir
// package: absolute names and ".." are refused, nothing is ever written
// through a symbolic link, links are recreated when they stay inside the
// directory and refused when they lead out, and a size limit is enforced
// while writing.
package codearchive

import (
	"errors"
	"fmt"
)

// ErrTooLarge is matched (errors.Is) by the error of pack.Dir or Unpack when
// the files exceed the size limit; the error is a *TooLargeError.
var ErrTooLarge = errors.New("code is too large")

// TooLargeError says by how much a limit was exceeded.
type TooLargeError struct {
	Size  int64 // bytes counted when the limit was crossed
	Limit int64
	Dir   string // the directory packed or unpacked
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the code in %s is larger than the limit of %s (%s counted so far); add a .dstackignore listing large files and directories (data, checkpoints, virtual environments) to leave them out",
		e.Dir, humanSize(e.Limit), humanSize(e.Size))
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
