package server

import (
	"net/http"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Every route states who may call it, where it is registered: a router
// records each route with its role, and the route table is what the role
// test enumerates (a route registered another way fails that test).
//
//   - public: anyone, no credential (health, version, the runner's
//     installer, sign-in; POST /runners/join checks its own join token).
//   - runner: a runner's credential (`dstack-runner start`).
//   - member: any user, by token or session cookie; what is theirs only
//     (another user's run, job, tag or runner is answered as an unknown
//     one), what an admin may see of everyone's.
//   - admin: admins only; a member gets 403 forbidden "only an admin can …".
//   - page: a web page for a signed-in browser (a user's session cookie,
//     else a redirect to /login); adminPage likewise for admins only.

// role is who may call a route.
type role string

const (
	rolePublic    role = "public"
	roleRunner    role = "runner"
	roleMember    role = "member"
	roleAdmin     role = "admin"
	rolePage      role = "page"
	roleAdminPage role = "admin page"
)

// route is one entry of the route table.
type route struct {
	Pattern string // as given to http.ServeMux: "GET /api/v1/users"
	Role    role
}

// router registers routes on a mux with their roles.
type router struct {
	s     *Server
	mux   *http.ServeMux
	table []route
}

func (rt *router) add(pattern string, rl role, h http.Handler) {
	rt.table = append(rt.table, route{Pattern: pattern, Role: rl})
	rt.mux.Handle(pattern, h)
}

// public registers a route anyone may call.
func (rt *router) public(pattern string, h http.HandlerFunc) { rt.add(pattern, rolePublic, h) }

// member registers a route for any user.
func (rt *router) member(pattern string, h userHandler) {
	rt.add(pattern, roleMember, rt.s.asUser(h))
}

// admin registers a route for admins; what completes "only an admin can …".
func (rt *router) admin(pattern, what string, h userHandler) {
	rt.add(pattern, roleAdmin, rt.s.asUser(adminOnly(what, h)))
}

// runner registers a route for runners' credentials.
func (rt *router) runner(pattern string, h runnerHandler) {
	rt.add(pattern, roleRunner, rt.s.asRunner(h))
}

// page registers a web page for signed-in users (uiPage checks the
// session).
func (rt *router) page(pattern string, h http.HandlerFunc) { rt.add(pattern, rolePage, h) }

// adminPage registers a web page for admins only.
func (rt *router) adminPage(pattern string, h http.HandlerFunc) { rt.add(pattern, roleAdminPage, h) }

// errAdminOnly is the answer to a member calling an admin's route.
func errAdminOnly(what string) error {
	return api.Errorf(http.StatusForbidden, api.CodeForbidden, "only an admin can %s: ask an admin of this server", what)
}

func adminOnly(what string, h userHandler) userHandler {
	return func(w http.ResponseWriter, r *http.Request, u *store.User) error {
		if !u.Admin {
			return errAdminOnly(what)
		}
		return h(w, r, u)
	}
}
