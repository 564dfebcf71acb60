package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"

	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/store"
)

// Every artifact file is recorded with the SHA-256 of its content, computed
// while it is stored (whatever the blob store: the data directory or a
// bucket). The listing returns it, downloads carry it as their ETag, and a
// resumed download (Range with If-Range) continues only a copy of the same
// content: `dstack artifacts download` never keeps or extends another run's
// file because its size matches.

// putArtifact stores an artifact file and records its size and hash. The old
// record is forgotten first, so that a file whose new content could not be
// recorded is listed without a hash (downloaded whole, never skipped), not
// with the hash of the content it replaced; a failed store keeps the old file
// (blob.Store's contract), and so gets its record back.
func (s *Server) putArtifact(ctx context.Context, st blob.Store, jobID, path string, body io.Reader) error {
	hashes, err := s.artifactHashes(ctx, jobID)
	if err != nil {
		return err
	}
	old := hashes[path]
	if old != nil {
		if err := s.store.ArtifactDelete(ctx, store.ArtifactDeleteParams{JobID: jobID, Path: path}); err != nil {
			return err
		}
	}
	h := sha256.New()
	n, err := st.Put(ctx, artifactPrefix(jobID)+path, io.TeeReader(body, h))
	if err != nil {
		if old != nil {
			p := store.ArtifactPutParams{JobID: jobID, Path: path, Size: old.Size, SHA256: old.SHA256}
			if rerr := s.store.ArtifactPut(context.WithoutCancel(ctx), p); rerr != nil {
				s.log.Warn("restore the record of an artifact kept after a failed upload; it is listed without a hash", "job", jobID, "path", path, "err", rerr)
			}
		}
		return err
	}
	if err := s.store.ArtifactPut(ctx, store.ArtifactPutParams{JobID: jobID, Path: path, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}); err != nil {
		return fmt.Errorf("artifact %s is stored but its hash is not: %w", path, err)
	}
	return nil
}

// artifactHashSet is the recorded hashes of a job's artifact files by path.
type artifactHashSet map[string]*store.Artifact

// of returns the hash of the file at path, or "" when it has none: uploaded
// before hashes were recorded, or its record does not describe the stored
// file (another size).
func (h artifactHashSet) of(path string, size int64) string {
	if a, ok := h[path]; ok && a.Size == size {
		return a.SHA256
	}
	return ""
}

func (s *Server) artifactHashes(ctx context.Context, jobID string) (artifactHashSet, error) {
	recs, err := s.store.ArtifactList(ctx, store.ArtifactListParams{JobID: jobID})
	if err != nil {
		return nil, err
	}
	out := make(artifactHashSet, len(recs))
	for _, a := range recs {
		out[a.Path] = a
	}
	return out, nil
}

// artifactETag is the strong entity tag of a file with the given hash, ""
// for a file without one.
func artifactETag(sum string) string {
	if sum == "" {
		return ""
	}
	return `"sha256:` + sum + `"`
}

// ifRangeMatches reports whether a Range request may be honoured: it has no
// If-Range, or its If-Range is the file's entity tag (compared strongly, as
// RFC 9110 asks). A file without a tag matches no If-Range, and dates are not
// validators here: the whole file is sent.
func ifRangeMatches(r *http.Request, etag string) bool {
	v := r.Header.Get("If-Range")
	return v == "" || (etag != "" && v == etag)
}
