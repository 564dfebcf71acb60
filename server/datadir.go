package server

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/dstackai/dstack/internal/privfs"
	"github.com/dstackai/dstack/internal/secretbox"
)

// prepareDataDir makes the data directory private (0700) and the files in
// it that hold secrets 0600: the SQLite database with its -wal and -shm
// (created 0600 before SQLite opens it, which then gives the others the
// same mode), and the encryption key. A directory the user made beforehand,
// 0755 by the usual umask, is tightened and the log says so; so are files
// an older server left readable by all.
func prepareDataDir(cfg Config, log *slog.Logger) error {
	was, err := privfs.Dir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if was != 0 {
		log.Info("the data directory was open to other users: made it private (0700)", "dir", cfg.DataDir, "was", was)
	}
	files := []string{secretbox.KeyFile}
	if cfg.DB == "" {
		db := filepath.Join(cfg.DataDir, "dstack.db")
		if was, err := privfs.CreateFile(db); err != nil {
			return fmt.Errorf("database file: %w", err)
		} else if was != 0 {
			log.Warn("the database was readable by other users: made it private (0600)", "file", db, "was", was)
		}
		files = append(files, "dstack.db-wal", "dstack.db-shm")
	}
	for _, name := range files {
		p := filepath.Join(cfg.DataDir, name)
		if was, err := privfs.File(p); err != nil {
			return fmt.Errorf("data directory: %w", err)
		} else if was != 0 {
			log.Warn("a file of the data directory was readable by other users: made it private (0600)", "file", p, "was", was)
		}
	}
	return nil
}
