package sqlcore

import (
	"context"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// SettingInit is one insert that does nothing when the name is set, then a
// read: of two callers racing, both read the first one's value.
func (s *Store) SettingInit(ctx context.Context, p store.SettingInitParams) (string, error) {
	if p.Name == "" || p.Value == "" {
		return "", fmt.Errorf("init setting %q: a name and a value are required", p.Name)
	}
	if _, err := s.write.Exec(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, p.Name, p.Value); err != nil {
		return "", fmt.Errorf("init setting %q: %w", p.Name, err)
	}
	var v string
	if err := s.write.QueryRow(ctx, `SELECT value FROM settings WHERE name = $1`, p.Name).Scan(&v); err != nil {
		return "", fmt.Errorf("read setting %q: %w", p.Name, err)
	}
	return v, nil
}

// SettingGet reads one setting.
func (s *Store) SettingGet(ctx context.Context, name string) (string, error) {
	var v string
	if err := s.read.QueryRow(ctx, `SELECT value FROM settings WHERE name = $1`, name).Scan(&v); err != nil {
		return "", fmt.Errorf("read setting %q: %w", name, err)
	}
	return v, nil
}

// SettingPut is one upsert.
func (s *Store) SettingPut(ctx context.Context, p store.SettingPutParams) error {
	if p.Name == "" || p.Value == "" {
		return fmt.Errorf("put setting %q: a name and a value are required", p.Name)
	}
	if _, err := s.write.Exec(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`, p.Name, p.Value); err != nil {
		return fmt.Errorf("put setting %q: %w", p.Name, err)
	}
	return nil
}

// SettingDelete deletes one setting.
func (s *Store) SettingDelete(ctx context.Context, name string) error {
	n, err := s.write.Exec(ctx, `DELETE FROM settings WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete setting %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("delete setting %q: %w", name, store.ErrNotFound)
	}
	return nil
}
