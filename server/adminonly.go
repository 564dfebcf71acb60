package server

import (
	"net/http"

	"github.com/dstackai/dstack/api"
)

// errAdminOnly answers a member on a route only an admin may use: 403
// "only an admin can WHAT: ask an admin of this server".
func errAdminOnly(what string) error {
	return api.Errorf(http.StatusForbidden, api.CodeForbidden, "only an admin can %s: ask an admin of this server", what)
}
