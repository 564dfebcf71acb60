package runner

import (
	"context"
	"errors"

	"github.com/dstackai/dstack/api"
)

// An on-demand instance's runner has no user token: the server gives each
// instance a single-use join token at launch (Config.JoinToken, passed by the
// backend through the instance's boot: a container's environment, user data).
// The runner's side of the contract:
//
//   - At start, with no reusable saved identity, it joins: POST /runners/join
//     with no Authorization header and api.RunnerJoinRequest (the fields of a
//     registration plus join_token). The answer is a registration's: the
//     runner credential, its expiry and the heartbeat interval. Unreachable
//     servers and 5xx answers are retried as for a registration; a refusal
//     (401: unknown, used or cancelled token) ends the start.
//   - The credential is saved in <data-dir>/state.json like a registered
//     runner's, so a restarted runner process reuses it.
//   - It never registers again: the token is spent. No renewal before
//     expiry (the server gives instances a credential that outlives them),
//     and when the server refuses the credential (the instance was
//     terminated, the runner deleted) the runner stops, its job stopped as
//     on shutdown, and the process exits: the instance has no further use.

// errJoinSpent says a joined runner was asked to register again.
var errJoinSpent = errors.New("the join token was already used: an on-demand instance's runner cannot register again")

// joins reports whether the runner joins with a join token rather than
// registering with a user's token.
func (r *Runner) joins() bool { return r.cfg.JoinToken != "" }

// exchange trades the runner's token for a runner credential: a
// registration with the user's token, or the one join of an on-demand
// instance (stale != "" means a credential was already had: refused).
func (r *Runner) exchange(ctx context.Context, req api.RunnerRegisterRequest, stale string) (*api.RunnerRegisterResponse, error) {
	if !r.joins() {
		return r.user.RunnerRegister(ctx, req)
	}
	if stale != "" {
		return nil, errJoinSpent
	}
	return r.user.RunnerJoin(ctx, api.RunnerJoinRequest{RunnerRegisterRequest: req, JoinToken: r.cfg.JoinToken})
}

// giveUp stops a joined runner whose credential the server refused: with
// its join token spent it cannot get another.
func (r *Runner) giveUp(err error) {
	r.log.Error("the server refused this on-demand runner's credential and it cannot register again; stopping", "err", err)
	r.life.Cancel()
}
