package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/store"
)

// errNoBackend answers a request about offers on a server with no backend.
var errNoBackend = invalid("on-demand runners need a backend, and this server has none: " +
	"run `dstack server` on a host with Docker for the local backend, or configure AWS with `dstack aws config`")

// regionDefaulter is a backend that names the region limits default to
// (AWS: the region configured with `dstack aws config`).
type regionDefaulter interface{ DefaultRegion() string }

// defaultRegion is the region a limit of b defaults to: the one b names, or
// else a region with b's own name (the local backend's only region is
// "local").
func defaultRegion(b backend.Backend) string {
	if d, ok := b.(regionDefaulter); ok && d.DefaultRegion() != "" {
		return d.DefaultRegion()
	}
	return b.Name()
}

// backendNames lists the configured backends with their default regions,
// for messages: "local (region local), aws (region eu-west-1)".
func (s *Server) backendNames() string {
	var names []string
	for _, b := range s.cfg.Backends {
		names = append(names, fmt.Sprintf("%s (region %s)", b.Name(), defaultRegion(b)))
	}
	return strings.Join(names, ", ")
}

// resolveScope picks the backend and region of a request: the named
// backend, or the only one, or the one that offers region; and region, or
// the backend's default.
func (s *Server) resolveScope(ctx context.Context, backendName, region string) (backend.Backend, string, error) {
	backendName, region = strings.TrimSpace(backendName), strings.TrimSpace(region)
	if len(s.cfg.Backends) == 0 {
		return nil, "", errNoBackend
	}
	var b backend.Backend
	switch {
	case backendName != "":
		if b = s.backend(backendName); b == nil {
			return nil, "", invalid("this server has no backend %q; it has %s", backendName, s.backendNames())
		}
	case region == "" || len(s.cfg.Backends) == 1:
		b = s.cfg.Backends[0]
	default:
		var matches []backend.Backend
		var names []string
		for _, c := range s.cfg.Backends {
			if _, err := c.Offers(ctx, region); err == nil {
				matches = append(matches, c)
				names = append(names, c.Name())
			}
		}
		switch len(matches) {
		case 0:
			return nil, "", invalid("no backend of this server offers region %q; its backends: %s", region, s.backendNames())
		case 1:
			b = matches[0]
		default:
			return nil, "", invalid("region %q is offered by several backends (%s): give the backend", region, strings.Join(names, ", "))
		}
	}
	if region == "" {
		region = defaultRegion(b)
	}
	return b, region, nil
}

// offers lists what b sells in region, with its refusals as API errors.
func (s *Server) offers(ctx context.Context, b backend.Backend, region string) ([]backend.Offer, error) {
	offs, err := b.Offers(ctx, region)
	switch {
	case err == nil:
		return offs, nil
	case errors.Is(err, backend.ErrInvalid), errors.Is(err, backend.ErrUnsupported):
		return nil, invalid("backend %s does not offer region %q (%s): its default region is %s",
			b.Name(), region, backend.Reason(err), defaultRegion(b))
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	s.log.Warn("list offers", "backend", b.Name(), "region", region, "err", err)
	return nil, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable,
		"cannot list the instance types of backend %s in region %s: %s; try again, and check the server's log if it persists",
		b.Name(), region, backend.Reason(err))
}

// findOffer is b's offer of instanceType at the purchase type in region, or
// an error that lists what region offers.
func (s *Server) findOffer(ctx context.Context, b backend.Backend, region, instanceType string, spot bool) (*backend.Offer, error) {
	offs, err := s.offers(ctx, b, region)
	if err != nil {
		return nil, err
	}
	var types []string
	other := false
	for i, o := range offs {
		if o.InstanceType == instanceType && o.Spot == spot {
			return &offs[i], nil
		}
		other = other || o.InstanceType == instanceType
		if o.Spot == spot && !slices.Contains(types, o.InstanceType) {
			types = append(types, o.InstanceType)
		}
	}
	if other {
		return nil, invalid("instance type %s is not offered as %s in region %s of backend %s, only as %s",
			instanceType, purchase(spot), region, b.Name(), purchase(!spot))
	}
	if len(types) == 0 {
		return nil, invalid("region %s of backend %s offers no %s instance types", region, b.Name(), purchase(spot))
	}
	return nil, invalid("instance type %q is not offered in region %s of backend %s; it offers: %s",
		instanceType, region, b.Name(), strings.Join(types, ", "))
}

func (s *Server) handleOfferList(w http.ResponseWriter, r *http.Request, _ *store.User) error {
	q := r.URL.Query()
	b, region, err := s.resolveScope(r.Context(), q.Get("backend"), q.Get("region"))
	if err != nil {
		return err
	}
	offs, err := s.offers(r.Context(), b, region)
	if err != nil {
		return err
	}
	out := make([]api.Offer, 0, len(offs))
	for _, o := range offs {
		out = append(out, api.Offer{
			Backend: o.Backend, Region: o.Region, InstanceType: o.InstanceType, PurchaseType: purchase(o.Spot),
			Resources: o.Resources(), PricePerHour: o.PricePerHour,
		})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// apiLimits renders limits with their instance types' resources (where
// their backends offer them now) and the capacity notes of their offers.
func (s *Server) apiLimits(ctx context.Context, ls []*store.Limit) ([]api.Limit, error) {
	out := make([]api.Limit, 0, len(ls))
	if len(ls) == 0 {
		return out, nil
	}
	unav, err := s.store.OfferUnavailableList(ctx, s.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("list unavailable offers: %w", err)
	}
	notes := map[backend.OfferKey]*store.OfferUnavailable{}
	for _, u := range unav {
		notes[backend.OfferKey{Backend: u.Backend, Region: u.Region, InstanceType: u.InstanceType, Spot: u.Spot}] = u
	}
	// The offers of each backend and region, listed once; a backend that
	// fails to answer leaves its limits without resources.
	offers := map[[2]string][]backend.Offer{}
	for _, l := range ls {
		k := [2]string{l.Backend, l.Region}
		if _, ok := offers[k]; ok {
			continue
		}
		offers[k] = nil
		if b := s.backend(l.Backend); b != nil {
			if offs, err := b.Offers(ctx, l.Region); err == nil {
				offers[k] = offs
			}
		}
	}
	for _, l := range ls {
		al := api.Limit{
			ID: l.ID, Backend: l.Backend, Region: l.Region, InstanceType: l.InstanceType, PurchaseType: purchase(l.Spot),
			Max: l.Max, Running: l.Instances, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt,
		}
		for _, o := range offers[[2]string{l.Backend, l.Region}] {
			if o.InstanceType == l.InstanceType && o.Spot == l.Spot {
				res := o.Resources()
				al.Resources, al.PricePerHour = &res, o.PricePerHour
				break
			}
		}
		if n := notes[backend.OfferKey{Backend: l.Backend, Region: l.Region, InstanceType: l.InstanceType, Spot: l.Spot}]; n != nil {
			since := n.Since.UTC()
			al.UnavailableSince, al.UnavailableReason = &since, n.Reason
		}
		out = append(out, al)
	}
	return out, nil
}
