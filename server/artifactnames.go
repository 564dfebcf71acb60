package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/blob"
)

// uploadPath is the artifact path of an upload, refused with 400 and the
// reason unless it is one every client can write back to disk (see
// api.CheckArtifactPath): no control characters, names of at most 255 bytes.
func uploadPath(r *http.Request) (string, error) {
	p := r.PathValue("path")
	if err := api.CheckArtifactPath(p); err != nil {
		return "", invalid("%v; nothing was stored", err)
	}
	return p, nil
}

// checkArtifactTree refuses, with 409, an artifact that cannot sit beside
// the job's others in a directory tree: one whose path goes through a file
// already uploaded ("a", then "a/b"), or that would replace a directory of
// them ("a/b", then "a"). A bucket could hold both; no download could.
func checkArtifactTree(ctx context.Context, st blob.Store, prefix, p string) error {
	for i := strings.IndexByte(p, '/'); i >= 0; i = next(p, i) {
		_, err := st.Stat(ctx, prefix+p[:i])
		if err == nil {
			return artifactConflict("artifact %s: %s is a file of this job already, and a path cannot go through a file; nothing was stored", p, p[:i])
		}
		if !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("check artifact %s: %w", p, err)
		}
	}
	under, err := st.List(ctx, prefix+p+"/")
	if err != nil {
		return fmt.Errorf("check artifact %s: %w", p, err)
	}
	if len(under) > 0 {
		return artifactConflict("artifact %s: this job has files under %s/ already (%s), and a file cannot replace a directory; nothing was stored",
			p, p, strings.TrimPrefix(under[0].Key, prefix))
	}
	return nil
}

// next is the index of the slash after the one at i, or -1.
func next(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

func artifactConflict(format string, args ...any) error {
	return api.Errorf(http.StatusConflict, api.CodeConflict, format, args...)
}

// artifactPutError says why a blob store refused an artifact: a key through
// a file or over a directory (409), a name the file system cannot hold
// (400); other errors are the server's.
func artifactPutError(p string, err error) error {
	switch {
	case errors.Is(err, blob.ErrConflict):
		return artifactConflict("artifact %s: a file of this job is in its way (a path through a file, or a file over a directory); nothing was stored", p)
	case errors.Is(err, blob.ErrInvalidKey):
		return invalid("artifact %s: the artifact store cannot hold this name (%v); nothing was stored", p, err)
	}
	return fmt.Errorf("store artifact: %w", err)
}
