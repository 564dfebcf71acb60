package sqlcore

import (
	"context"
	"fmt"
	"time"

	"github.com/dstackai/dstack/store"
)

// OfferMarkUnavailable records or replaces an offer's mark. A mark that has
// not expired keeps its Since, so that a note reads "no capacity since" the
// first refusal of a run of them.
func (s *Store) OfferMarkUnavailable(ctx context.Context, p store.OfferMarkUnavailableParams) error {
	_, err := s.write.Exec(ctx, `INSERT INTO offers_unavailable (backend, region, instance_type, spot,
		since, unavailable_until, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (backend, region, instance_type, spot) DO UPDATE SET
		since = CASE WHEN offers_unavailable.unavailable_until > excluded.since
			THEN offers_unavailable.since ELSE excluded.since END,
		unavailable_until = excluded.unavailable_until, reason = excluded.reason`,
		p.Backend, p.Region, p.InstanceType, p.Spot, micros(p.Now), micros(p.Until), p.Reason)
	if err != nil {
		return fmt.Errorf("mark offer %s/%s/%s (spot %v) unavailable: %w", p.Backend, p.Region, p.InstanceType, p.Spot, err)
	}
	return nil
}

// OfferUnavailableList lists the marks that expire after now, by offer key.
// Expired marks stay in the table, one row per offer ever refused.
func (s *Store) OfferUnavailableList(ctx context.Context, now time.Time) ([]*store.OfferUnavailable, error) {
	rows, err := s.read.Query(ctx, `SELECT backend, region, instance_type, spot, since, unavailable_until, reason
		FROM offers_unavailable WHERE unavailable_until > $1
		ORDER BY backend, region, instance_type, spot`, micros(now))
	if err != nil {
		return nil, fmt.Errorf("list unavailable offers: %w", err)
	}
	defer rows.Close()
	var out []*store.OfferUnavailable
	for rows.Next() {
		var (
			o            store.OfferUnavailable
			since, until int64
		)
		if err := rows.Scan(&o.Backend, &o.Region, &o.InstanceType, &o.Spot, &since, &until, &o.Reason); err != nil {
			return nil, fmt.Errorf("list unavailable offers: %w", err)
		}
		o.Since, o.Until = fromMicros(since), fromMicros(until)
		out = append(out, &o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list unavailable offers: %w", err)
	}
	return out, nil
}

// LeaseAcquire is one upsert: the row is written when the name is free, and
// overwritten only when it is the holder's or expired. Both databases run an
// upsert atomically, so of two holders racing for a free or expired lease
// exactly one writes it. A renewal keeps the lease's AcquiredAt.
func (s *Store) LeaseAcquire(ctx context.Context, p store.LeaseAcquireParams) (bool, error) {
	if p.TTL <= 0 || p.Name == "" || p.Holder == "" {
		return false, fmt.Errorf("acquire lease %q for %q: a name, a holder and a positive TTL are required", p.Name, p.Holder)
	}
	now := micros(p.Now)
	n, err := s.write.Exec(ctx, `INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
		acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END
		WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.acquired_at`,
		p.Name, p.Holder, now, micros(p.Now.Add(p.TTL)))
	if err != nil {
		return false, fmt.Errorf("acquire lease %q for %q: %w", p.Name, p.Holder, err)
	}
	return n == 1, nil
}

// LeaseRelease deletes the lease if the holder has it.
func (s *Store) LeaseRelease(ctx context.Context, p store.LeaseReleaseParams) error {
	if _, err := s.write.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, p.Name, p.Holder); err != nil {
		return fmt.Errorf("release lease %q of %q: %w", p.Name, p.Holder, err)
	}
	return nil
}
