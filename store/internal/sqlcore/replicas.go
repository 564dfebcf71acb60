package sqlcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// ReplicaPut is one upsert.
func (s *Store) ReplicaPut(ctx context.Context, r *store.Replica) error {
	if r.ID == "" {
		return errors.New("put replica: an ID is required")
	}
	if _, err := s.write.Exec(ctx, `INSERT INTO replicas (id, host, url, external_url, storage, key_check, started_at, seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (id) DO UPDATE SET host = excluded.host, url = excluded.url, external_url = excluded.external_url,
		storage = excluded.storage, key_check = excluded.key_check, started_at = excluded.started_at, seen_at = excluded.seen_at`,
		r.ID, r.Host, r.URL, r.ExternalURL, r.Storage, r.KeyCheck, micros(r.StartedAt), micros(r.SeenAt)); err != nil {
		return fmt.Errorf("put replica %s: %w", r.ID, err)
	}
	return nil
}

// ReplicaList reads the replicas seen since p.SeenSince.
func (s *Store) ReplicaList(ctx context.Context, p store.ReplicaListParams) ([]*store.Replica, error) {
	rows, err := s.read.Query(ctx, `SELECT id, host, url, external_url, storage, key_check, started_at, seen_at
		FROM replicas WHERE seen_at >= $1 ORDER BY id`, micros(p.SeenSince))
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	var out []*store.Replica
	for rows.Next() {
		var r store.Replica
		var started, seen int64
		if err := rows.Scan(&r.ID, &r.Host, &r.URL, &r.ExternalURL, &r.Storage, &r.KeyCheck, &started, &seen); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		r.StartedAt, r.SeenAt = fromMicros(started), fromMicros(seen)
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}

// ReplicaDelete is one delete.
func (s *Store) ReplicaDelete(ctx context.Context, p store.ReplicaDeleteParams) (int, error) {
	before := int64(-1 << 62)
	if !p.SeenBefore.IsZero() {
		before = micros(p.SeenBefore)
	}
	n, err := s.write.Exec(ctx, `DELETE FROM replicas WHERE id = $1 OR seen_at < $2`, p.ID, before)
	if err != nil {
		return 0, fmt.Errorf("delete replicas: %w", err)
	}
	return int(n), nil
}
