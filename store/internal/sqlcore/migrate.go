package sqlcore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migration is one NNN_name.up.sql file.
type migration struct {
	version int64
	name    string
	sql     string
	// checksum is the SHA-256 of the file, in hex.
	checksum string
}

// file is the migration's file name.
func (m migration) file() string { return m.name + ".up.sql" }

// loadMigrations reads the *.up.sql files at the root of fsys, in version
// order. Two files with one version are an error.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.up.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []migration
	seen := map[int64]string{}
	for _, name := range names {
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %q: name must be NNN_name.up.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %q and %q share version %d", other, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %q: %w", name, err)
		}
		sum := sha256.Sum256(b)
		out = append(out, migration{version: v, name: strings.TrimSuffix(name, ".up.sql"), sql: string(b), checksum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// Migrate applies, in one transaction, the migrations not yet recorded in
// schema_migrations. The transaction takes the dialect's lock first (SQLite's
// immediate transaction is the lock there), so concurrent callers apply each
// migration once: the later ones find it recorded.
//
// Each applied migration is recorded with the checksum of its file, and a
// migration whose file no longer has the checksum it was applied with is
// refused: the database was built by another text than the one shipped, so
// the schema may not be what the code expects. A database from before
// checksums (schema_migrations without the column) gets the column, and the
// checksums of the files as they are now for the migrations it has.
func (s *Store) Migrate(ctx context.Context) error {
	migs, err := loadMigrations(s.d.Migrations)
	if err != nil {
		return err
	}
	err = s.write.Tx(ctx, func(q Querier) error {
		if s.d.MigrateLock != "" {
			if _, err := q.Exec(ctx, s.d.MigrateLock); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		if _, err := q.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version BIGINT PRIMARY KEY,
			name TEXT NOT NULL,
			applied_at BIGINT NOT NULL,
			checksum TEXT NOT NULL DEFAULT '')`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		if err := s.addChecksumColumn(ctx, q); err != nil {
			return err
		}
		applied, err := appliedChecksums(ctx, q)
		if err != nil {
			return err
		}
		for _, m := range migs {
			sum, ok := applied[m.version]
			switch {
			case !ok:
				if _, err := q.Exec(ctx, m.sql); err != nil {
					return fmt.Errorf("apply %s: %w", m.name, err)
				}
				if _, err := q.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at, checksum) VALUES ($1, $2, $3, $4)`,
					m.version, m.name, time.Now().UnixMicro(), m.checksum); err != nil {
					return fmt.Errorf("record %s: %w", m.name, err)
				}
			case sum == "":
				// Applied before checksums were recorded: the file as it is now
				// is taken for the one applied.
				if _, err := q.Exec(ctx, `UPDATE schema_migrations SET checksum = $1 WHERE version = $2`, m.checksum, m.version); err != nil {
					return fmt.Errorf("record the checksum of %s: %w", m.name, err)
				}
			case sum != m.checksum:
				return fmt.Errorf("migration %s was changed after this database applied it (checksum %.12s then, %.12s now): "+
					"an applied migration must not change; restore %s as it was and put the change in a new migration",
					m.file(), sum, m.checksum, m.file())
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if s.d.Optimize != "" {
		if _, err := s.write.Exec(ctx, s.d.Optimize); err != nil {
			return fmt.Errorf("migrate: gather the planner's statistics: %w", err)
		}
	}
	return nil
}

// addChecksumColumn adds schema_migrations.checksum to a table created
// before it existed.
func (s *Store) addChecksumColumn(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, s.d.TableColumns, "schema_migrations")
	if err != nil {
		return fmt.Errorf("read the columns of schema_migrations: %w", err)
	}
	defer rows.Close()
	has := false
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return fmt.Errorf("read the columns of schema_migrations: %w", err)
		}
		has = has || name == "checksum"
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the columns of schema_migrations: %w", err)
	}
	rows.Close()
	if has {
		return nil
	}
	if _, err := q.Exec(ctx, `ALTER TABLE schema_migrations ADD COLUMN checksum TEXT NOT NULL DEFAULT ''`); err != nil {
		return fmt.Errorf("add schema_migrations.checksum: %w", err)
	}
	return nil
}

// appliedChecksums reads the recorded migrations: version to checksum, ""
// for those recorded before checksums were.
func appliedChecksums(ctx context.Context, q Querier) (map[int64]string, error) {
	applied := map[int64]string{}
	rows, err := q.Query(ctx, `SELECT version, checksum FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v int64
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		applied[v] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return applied, nil
}
