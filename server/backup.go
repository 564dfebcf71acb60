package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dstackai/dstack/store/sqlite"
)

// Backup writes a consistent copy of the SQLite state in cfg.DataDir to
// out, while the server runs (see sqlite.Backup); it returns the copy's
// size. A server on PostgreSQL (cfg.DB) is backed up with PostgreSQL's own
// tools, and Backup says so. Code archives, artifacts and logs in the data
// directory are files, copied as files.
func Backup(ctx context.Context, cfg Config, out string) (int64, error) {
	if cfg.DB != "" {
		return 0, fmt.Errorf("the state is in PostgreSQL: back it up with pg_dump, such as pg_dump --format=custom --file dstack.dump %q (see docs/operations.md)", "DATABASE_URL")
	}
	if out == "" {
		return 0, fmt.Errorf("no --out: give the file to write the copy to, such as dstack-backup.db")
	}
	if err := cfg.applyDefaults(); err != nil {
		return 0, err
	}
	path := filepath.Join(cfg.DataDir, "dstack.db")
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("no server state at %s (%w): give the server's --data-dir", path, err)
	}
	if err := sqlite.Backup(ctx, path, out); err != nil {
		return 0, err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	return fi.Size(), nil
}
