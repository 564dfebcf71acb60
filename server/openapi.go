package server

import (
	_ "embed"
	"net/http"
)

// openAPI documents every endpoint of the API; a test checks that it names
// every route the server serves.
//
//go:embed openapi.yaml
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openAPI)
}
