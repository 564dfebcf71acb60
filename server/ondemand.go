package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// The on-demand API: the server's limits, the on-demand switch, and the offers
// limits are checked against (ondemand_offers.go). Every change wakes the
// autoscaler, so that a lower maximum, a deleted limit or disabling
// terminates the extra instances at once rather than at its next tick.
//
// A change that terminates instances answers how many (Terminating); with
// ?dry_run=true it answers the same and changes nothing, which is how the
// CLI asks for confirmation before it makes the change.

// maxLimit bounds a limit's maximum: a typo of 10000 should not launch a
// fleet.
const maxLimit = 1000

func (s *Server) onDemandRoutes(rt *router) {
	p := api.PathPrefix
	rt.member("GET "+p+"/limits", s.handleLimitList)
	rt.admin("PUT "+p+"/limits", "set on-demand limits", s.handleLimitPut)
	rt.admin("DELETE "+p+"/limits", "delete on-demand limits", s.handleLimitDelete)
	rt.member("GET "+p+"/on-demand", s.handleOnDemandGet)
	rt.admin("PUT "+p+"/on-demand", "enable or disable on-demand runners", s.handleOnDemandPut)
	rt.member("GET "+p+"/offers", s.handleOfferList)
}

// dryRun reads the dry_run query parameter.
func dryRun(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("dry_run")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid("dry_run=%q: give true or false", v)
	}
	return b, nil
}

// parsePurchase reads a purchase type; empty is on-demand.
func parsePurchase(v string) (spot bool, err error) {
	switch v {
	case api.PurchaseSpot:
		return true, nil
	case api.PurchaseOnDemand, "":
		return false, nil
	}
	return false, invalid("purchase type %q: give %q or %q", v, api.PurchaseSpot, api.PurchaseOnDemand)
}

func purchase(spot bool) string {
	if spot {
		return api.PurchaseSpot
	}
	return api.PurchaseOnDemand
}

func (s *Server) handleLimitList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	ls, err := s.store.LimitList(r.Context(), store.LimitListParams{})
	if err != nil {
		return fmt.Errorf("list limits: %w", err)
	}
	out, err := s.apiLimits(r.Context(), ls)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleLimitPut(w http.ResponseWriter, r *http.Request, u *store.User) error {
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	var req api.LimitPutRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	spot, err := parsePurchase(req.PurchaseType)
	if err != nil {
		return err
	}
	req.InstanceType = strings.TrimSpace(req.InstanceType)
	if req.InstanceType == "" {
		return invalid("instance_type is missing: `GET %s/offers` lists the instance types you can limit", api.PathPrefix)
	}
	if req.Max < 0 || req.Max > maxLimit {
		return invalid("max %d is out of range: give 0 to %d instances", req.Max, maxLimit)
	}
	ctx := r.Context()
	b, region, err := s.limitScope(ctx, req.Backend, req.Region, req.InstanceType, spot)
	if err != nil {
		return err
	}
	ls, err := s.store.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return fmt.Errorf("list limits: %w", err)
	}
	var prev *store.Limit
	for _, l := range ls {
		if l.Backend == b.Name() && l.Region == region && l.InstanceType == req.InstanceType && l.Spot == spot {
			prev = l
		}
	}
	live := map[string]int{}
	if prev != nil {
		if live, err = s.liveInstances(ctx); err != nil {
			return err
		}
	}
	resp := api.LimitPutResponse{DryRun: dry, Created: prev == nil}
	var l *store.Limit
	if dry {
		l = &store.Limit{Backend: b.Name(), Region: region, InstanceType: req.InstanceType, Spot: spot, CreatedAt: s.cfg.Now(), UpdatedAt: s.cfg.Now()}
		if prev != nil {
			cp := *prev
			l = &cp
			resp.PreviousMax = prev.Max
		}
		l.Max = req.Max
	} else {
		res, err := s.store.LimitPut(ctx, store.LimitPutParams{
			ID: newID(), UserID: u.ID, Backend: b.Name(), Region: region, InstanceType: req.InstanceType, Spot: spot, Max: req.Max, Now: s.cfg.Now(),
		})
		if err != nil {
			return fmt.Errorf("put limit: %w", err)
		}
		l, resp.Created, resp.PreviousMax = res.Limit, res.Created, res.PrevMax
		s.wakeAutoscaler()
		s.events.publish("", api.EventLimits)
		s.log.Info("limit set", "user", u.Name, "limit", l.ID, "backend", l.Backend, "region", l.Region,
			"instance_type", l.InstanceType, "spot", l.Spot, "max", l.Max, "previous_max", res.PrevMax)
		detail := map[string]any{"id": l.ID, "max": l.Max, "created": res.Created}
		if !res.Created {
			detail["previous_max"] = res.PrevMax
		}
		if err := s.audit(r, u, auditLimitPut, limitTarget(l), detail); err != nil {
			return err
		}
	}
	if prev != nil {
		resp.Terminating = max(0, live[prev.ID]-req.Max)
	}
	out, err := s.apiLimits(ctx, []*store.Limit{l})
	if err != nil {
		return err
	}
	resp.Limit = out[0]
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// handleLimitDelete deletes every limit of the user with all=true, or the
// one that matches instance_type and purchase_type, and backend and region
// where given (when several match, the caller must say which).
func (s *Server) handleLimitDelete(w http.ResponseWriter, r *http.Request, u *store.User) error {
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	all := false
	if v := q.Get("all"); v != "" {
		if all, err = strconv.ParseBool(v); err != nil {
			return invalid("all=%q: give true or false", v)
		}
	}
	itype := strings.TrimSpace(q.Get("instance_type"))
	switch {
	case all && itype != "":
		return invalid("give either all=true or instance_type, not both")
	case !all && itype == "":
		return invalid("say which limit to delete: instance_type (with purchase_type, and region and backend where several match), or all=true for every limit")
	}
	spot, err := parsePurchase(q.Get("purchase_type"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	ls, err := s.store.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return fmt.Errorf("list limits: %w", err)
	}
	targets := ls
	if !all {
		targets = nil
		for _, l := range ls {
			if l.InstanceType == itype && l.Spot == spot && (q.Get("backend") == "" || q.Get("backend") == l.Backend) &&
				(q.Get("region") == "" || q.Get("region") == l.Region) {
				targets = append(targets, l)
			}
		}
		switch {
		case len(targets) == 0:
			where := ""
			if v := q.Get("region"); v != "" {
				where = " in region " + v
			}
			return notFound("you have no limit for %s (%s)%s: `dstack on-demand limits` lists yours", itype, purchase(spot), where)
		case len(targets) > 1:
			var names []string
			for _, l := range targets {
				names = append(names, l.Backend+"/"+l.Region)
			}
			return invalid("you have %d limits for %s (%s), in %s: give the region (and backend) of the one to delete",
				len(targets), itype, purchase(spot), strings.Join(names, ", "))
		}
	}
	live, err := s.liveInstances(ctx)
	if err != nil {
		return err
	}
	resp := api.LimitDeleteResponse{DryRun: dry}
	for _, l := range targets {
		resp.Terminating += live[l.ID]
	}
	deleted := targets
	if !dry && len(targets) > 0 {
		id := ""
		if !all {
			id = targets[0].ID
		}
		deleted, err = s.store.LimitDelete(ctx, store.LimitDeleteParams{ID: id, Now: s.cfg.Now()})
		if err != nil {
			return fmt.Errorf("delete limits: %w", err)
		}
		s.wakeAutoscaler()
		s.events.publish("", api.EventLimits, api.EventInstances)
		s.log.Info("limits deleted", "user", u.Name, "limits", len(deleted), "terminating", resp.Terminating)
		for _, l := range deleted {
			if err := s.audit(r, u, auditLimitDelete, limitTarget(l), map[string]any{"id": l.ID, "max": l.Max, "instances": live[l.ID]}); err != nil {
				return err
			}
		}
	}
	if resp.Deleted, err = s.apiLimits(ctx, deleted); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) handleOnDemandGet(w http.ResponseWriter, r *http.Request, u *store.User) error {
	st, err := s.onDemandStatus(r.Context())
	if err != nil {
		return err
	}
	b, err := s.budget(r.Context(), s.cfg.Now())
	if err != nil {
		return err
	}
	if b.Monthly > 0 {
		st.Budget = b
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleOnDemandPut(w http.ResponseWriter, r *http.Request, u *store.User) error {
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	var req api.OnDemandRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	before, err := s.onDemandStatus(ctx)
	if err != nil {
		return err
	}
	terminating := 0
	if !req.Enabled && before.Enabled {
		live, err := s.liveInstances(ctx)
		if err != nil {
			return err
		}
		ls, err := s.store.LimitList(ctx, store.LimitListParams{})
		if err != nil {
			return fmt.Errorf("list limits: %w", err)
		}
		for _, l := range ls {
			terminating += live[l.ID]
		}
	}
	after := before
	if dry {
		after.Enabled = req.Enabled
	} else {
		if err := s.store.OnDemandSetEnabled(ctx, store.OnDemandSetEnabledParams{Enabled: req.Enabled, Now: s.cfg.Now()}); err != nil {
			return fmt.Errorf("set on-demand: %w", err)
		}
		s.wakeAutoscaler()
		s.events.publish("", api.EventLimits, api.EventInstances)
		s.log.Info("on-demand runners switched", "user", u.Name, "enabled", req.Enabled, "terminating", terminating)
		action := auditOnDemandDisable
		if req.Enabled {
			action = auditOnDemandEnable
		}
		if err := s.audit(r, u, action, "on-demand runners", map[string]any{"was_enabled": before.Enabled, "terminating": terminating}); err != nil {
			return err
		}
		if after, err = s.onDemandStatus(ctx); err != nil {
			return err
		}
	}
	after.Terminating, after.DryRun = terminating, dry
	writeJSON(w, http.StatusOK, after)
	return nil
}

// onDemandStatus is the server's switch, with counts of limits and
// instances.
func (s *Server) onDemandStatus(ctx context.Context) (*api.OnDemandStatus, error) {
	od, err := s.store.OnDemandGet(ctx)
	if err != nil {
		return nil, fmt.Errorf("get on-demand switch: %w", err)
	}
	ls, err := s.store.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	st := &api.OnDemandStatus{Enabled: od.Enabled, Limits: len(ls), Backends: []string{}}
	if !od.UpdatedAt.IsZero() {
		t := od.UpdatedAt.UTC()
		st.UpdatedAt = &t
	}
	for _, l := range ls {
		st.Running += l.Instances
	}
	st.Backends = append(st.Backends, s.backends.Names()...)
	return st, nil
}

// liveInstances counts the launching and running instances by limit ID:
// those a lower maximum, a deletion or disabling would terminate
// (terminating ones are going already).
func (s *Server) liveInstances(ctx context.Context) (map[string]int, error) {
	insts, err := s.store.InstanceList(ctx, store.InstanceListParams{
		States: []store.InstanceState{store.InstanceLaunching, store.InstanceRunning},
	})
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	out := map[string]int{}
	for _, in := range insts {
		out[in.LimitID]++
	}
	return out, nil
}
