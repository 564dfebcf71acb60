package server

import (
	"cmp"
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

// noBackend answers a request that names a backend the server does not
// have (name may be empty: any backend).
func (s *Server) noBackend(name string) error {
	switch {
	case s.backends.Len() == 0 && name == "":
		return invalid("on-demand runners need a backend, and this server has none: " +
			"run `dstack server` on a host with Docker for the local backend, or configure AWS with `dstack aws config`")
	case name == awsName && !s.cfg.AWS.Disabled:
		msg := "this server has no backend \"aws\": AWS is not configured; an admin configures it with `dstack aws config`"
		if s.backends.Len() > 0 {
			msg += "; its backends are " + s.backendNames()
		}
		return invalid("%s", msg)
	case s.backends.Len() == 0:
		return invalid("this server has no backend %q, and no backend at all: "+
			"run `dstack server` on a host with Docker for the local backend, or configure AWS with `dstack aws config`", name)
	}
	return invalid("this server has no backend %q; it has %s", name, s.backendNames())
}

// regionDefaulter is a backend that names the region limits default to
// (AWS: the region configured with `dstack aws config`).
type regionDefaulter interface{ DefaultRegion() string }

// defaultRegion is the region a limit of b defaults to: the one b names, or
// else a region with b's own name (the local backend's only region is
// "local").
func defaultRegion(b backend.Backend) string {
	if d, ok := backend.As[regionDefaulter](b); ok && d.DefaultRegion() != "" {
		return d.DefaultRegion()
	}
	return b.Name()
}

// backendNames lists the configured backends with their default regions,
// for messages: "local (region local), aws (region eu-west-1)".
func (s *Server) backendNames() string {
	var names []string
	for _, b := range s.backends.All() {
		names = append(names, fmt.Sprintf("%s (region %s)", b.Name(), defaultRegion(b)))
	}
	return strings.Join(names, ", ")
}

// resolveScope picks the backend and region of a request: the named
// backend, or the only one, or the one that offers region; and region, or
// the backend's default.
func (s *Server) resolveScope(ctx context.Context, backendName, region string) (backend.Backend, string, error) {
	backendName, region = strings.TrimSpace(backendName), strings.TrimSpace(region)
	all := s.backends.All()
	if len(all) == 0 {
		return nil, "", s.noBackend(backendName)
	}
	var b backend.Backend
	switch {
	case backendName != "":
		if b = s.backend(backendName); b == nil {
			return nil, "", s.noBackend(backendName)
		}
	case region == "" || len(all) == 1:
		b = all[0]
	default:
		var matches []backend.Backend
		var names []string
		for _, c := range all {
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
	return nil, unavailable(api.CauseCloud,
		"cannot list the instance types of backend %s in region %s: %s; try again, and check the server's log if it persists",
		b.Name(), region, backend.Reason(err))
}

// findOffer is b's offer of instanceType at the purchase type in region, or
// an error that says what region offers.
func (s *Server) findOffer(ctx context.Context, b backend.Backend, region, instanceType string, spot bool) (*backend.Offer, error) {
	offs, err := s.offers(ctx, b, region)
	if err != nil {
		return nil, err
	}
	o, why := matchOffer(offs, instanceType, spot)
	if o == nil {
		return nil, invalid("instance type %q %s", instanceType, why.text(b.Name(), region))
	}
	return o, nil
}

// limitScope picks the backend and region of a limit. With neither named
// and several backends, it is the backend whose default region offers the
// instance type (the local backend offers local.*, AWS its EC2 types), so
// that `dstack on-demand limit -i m5.xlarge --spot` works beside the local
// backend; otherwise as resolveScope. The offer must exist.
func (s *Server) limitScope(ctx context.Context, backendName, region, instanceType string, spot bool) (backend.Backend, string, error) {
	all := s.backends.All()
	if strings.TrimSpace(backendName) != "" || strings.TrimSpace(region) != "" || len(all) < 2 {
		b, region, err := s.resolveScope(ctx, backendName, region)
		if err != nil {
			return nil, "", err
		}
		if _, err := s.findOffer(ctx, b, region, instanceType, spot); err != nil {
			return nil, "", err
		}
		return b, region, nil
	}
	var (
		whys     []string
		firstErr error
		other    []backend.Backend // offer the type at the other purchase type
	)
	for _, b := range all {
		region := defaultRegion(b)
		offs, err := s.offers(ctx, b, region)
		if err != nil {
			// A backend that cannot answer is passed over; its
			// failure is said when no other one offers the type.
			firstErr = cmp.Or(firstErr, err)
			whys = append(whys, fmt.Sprintf("from backend %s, which could not be asked (%v)", b.Name(), err))
			continue
		}
		o, why := matchOffer(offs, instanceType, spot)
		if o != nil {
			return b, region, nil
		}
		if why.other {
			other = append(other, b)
		}
		whys = append(whys, why.where(b.Name(), region))
	}
	switch {
	case len(other) == 1:
		_, err := s.findOffer(ctx, other[0], defaultRegion(other[0]), instanceType, spot)
		return nil, "", err
	case firstErr != nil && len(whys) == 1:
		return nil, "", firstErr
	}
	return nil, "", invalid("instance type %q is not offered by this server's backends in their default regions: not %s; "+
		"check the name, or give the region (-r) where it is offered", instanceType, strings.Join(whys, ", nor "))
}

// maxListed is how many instance types an error lists: the local backend's
// few in full, of a cloud's hundreds only those like the one asked for.
const maxListed = 12

// notOffered says why offers hold no instance type at a purchase type.
type notOffered struct {
	other   bool     // offered at the other purchase type
	none    bool     // nothing at all is offered at the purchase type
	types   []string // what is offered at the purchase type, when few
	similar []string // offered types like the one asked for, when many
	spot    bool
}

// text is the reason, after `instance type "m5.xlargee"`: "is not offered
// in region eu-west-1 (on-demand/spot) of backend aws; similar types it
// offers: m5.xlarge, m5.2xlarge".
func (n notOffered) text(backendName, region string) string {
	msg := "is not offered " + n.place(backendName, region)
	if d := n.alternatives(); d != "" {
		msg += "; " + d
	}
	return msg
}

// where is the reason as one of several, after "not": "in region
// eu-west-1 (on-demand/spot) of backend aws (similar types it offers:
// m5.xlarge)".
func (n notOffered) where(backendName, region string) string {
	msg := n.place(backendName, region)
	if d := n.alternatives(); d != "" {
		msg += " (" + d + ")"
	}
	return msg
}

// place says where the type is not offered: "in region eu-west-1
// (on-demand/spot) of backend aws", or why at this purchase type only.
func (n notOffered) place(backendName, region string) string {
	switch {
	case n.other:
		return fmt.Sprintf("as %s in region %s of backend %s, only as %s", purchase(n.spot), region, backendName, purchase(!n.spot))
	case n.none:
		return fmt.Sprintf("in region %s of backend %s, which offers no %s instance types", region, backendName, purchase(n.spot))
	}
	return fmt.Sprintf("in region %s (on-demand/spot) of backend %s", region, backendName)
}

// alternatives lists what is offered instead when the type is not offered
// at all: all of few types, or of many those like the one asked for.
func (n notOffered) alternatives() string {
	switch {
	case n.other || n.none:
		return ""
	case len(n.types) > 0:
		return "it offers: " + strings.Join(n.types, ", ")
	case len(n.similar) > 0:
		return "similar types it offers: " + strings.Join(n.similar, ", ")
	}
	return ""
}

// matchOffer finds instanceType at the purchase type in offs, or says why
// it is not there.
func matchOffer(offs []backend.Offer, instanceType string, spot bool) (*backend.Offer, notOffered) {
	n := notOffered{spot: spot}
	var types []string
	for i, o := range offs {
		if o.InstanceType == instanceType && o.Spot == spot {
			return &offs[i], n
		}
		n.other = n.other || o.InstanceType == instanceType
		if o.Spot == spot && !slices.Contains(types, o.InstanceType) {
			types = append(types, o.InstanceType)
		}
	}
	n.none = len(types) == 0
	if len(types) <= maxListed {
		n.types = types
		return nil, n
	}
	// Of many, those the name asked for starts with ("m5.xlarge" of
	// "m5.xlargee"), then others of its family ("m5").
	family, _, _ := strings.Cut(instanceType, ".")
	var prefixes, kin []string
	for _, t := range types {
		f, _, _ := strings.Cut(t, ".")
		switch {
		case strings.HasPrefix(instanceType, t):
			prefixes = append(prefixes, t)
		case f == family:
			kin = append(kin, t)
		}
	}
	slices.Sort(prefixes)
	slices.Sort(kin)
	n.similar = append(prefixes, kin...)
	n.similar = n.similar[:min(len(n.similar), maxListed)]
	return nil, n
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
