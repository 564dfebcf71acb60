package cli

import (
	"context"
	"fmt"

	"github.com/dstackai/dstack/internal/bytesize"
)

// serverCodeLimit is the largest code archive the server accepts, from GET
// /version; 0 when the server does not say (the upload then finds out).
func serverCodeLimit(ctx context.Context, c *apiClient) int64 {
	info, err := c.ServerInfo(ctx)
	if err != nil {
		return 0
	}
	return info.MaxCodeSize
}

// checkCodeSize refuses, before uploading, a code archive of size bytes
// that the server would refuse, saying how to fix it once.
func checkCodeSize(dir string, size, limit int64) error {
	if limit <= 0 || size <= limit {
		return nil
	}
	return fmt.Errorf("the code of %s packs to %s, over the server's limit of %s: list big files and folders (data, checkpoints) in .dstackignore, or raise the limit with `dstack server --max-code-size SIZE`",
		dir, bytesize.Format(size), bytesize.Exact(limit))
}
