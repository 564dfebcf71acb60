package server

import (
	"net/http"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/version"
)

// userHandler serves a request authenticated as a user.
type userHandler func(w http.ResponseWriter, r *http.Request, u *store.User) error

// runnerHandler serves a request authenticated as a runner.
type runnerHandler func(w http.ResponseWriter, r *http.Request, rn *store.Runner) error

func (s *Server) asUser(h userHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := s.auth.user(r)
		if err == nil {
			err = h(w, r, u)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	}
}

func (s *Server) asRunner(h runnerHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rn, err := s.auth.runner(r)
		if err == nil {
			err = h(w, r, rn)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	p := api.PathPrefix
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /api/openapi.yaml", serveOpenAPI)
	mux.HandleFunc("GET /runner", s.handleRunnerInstaller)
	mux.HandleFunc("GET /runner/download/{os}/{arch}/dstack-runner", s.handleRunnerBinary)
	mux.HandleFunc("GET /runner/download/{os}/{arch}/dstack-runner.sha256", s.handleRunnerChecksum)

	mux.HandleFunc("GET "+p+"/me", s.asUser(s.handleMe))
	mux.HandleFunc("GET "+p+"/version", s.handleVersion)
	mux.HandleFunc("POST "+p+"/code", s.asUser(s.handleCodeUpload))
	mux.HandleFunc("POST "+p+"/runs", s.asUser(s.handleRunSubmit))
	mux.HandleFunc("GET "+p+"/runs", s.asUser(s.handleRunList))
	mux.HandleFunc("GET "+p+"/runs/{name}", s.asUser(s.handleRunGet))
	mux.HandleFunc("POST "+p+"/runs/{name}/stop", s.asUser(s.handleRunStop))
	mux.HandleFunc("GET "+p+"/runs/{name}/artifacts", s.asUser(s.handleArtifactList))
	mux.HandleFunc("GET "+p+"/jobs/{id}/logs", s.asUser(s.handleJobLogs))
	mux.HandleFunc("GET "+p+"/jobs/{id}/artifacts/{path...}", s.asUser(s.handleArtifactDownload))
	mux.HandleFunc("GET "+p+"/runners", s.asUser(s.handleRunnerList))
	mux.HandleFunc("POST "+p+"/runners/register", s.asUser(s.handleRunnerRegister))
	mux.HandleFunc("DELETE "+p+"/runners/{ref}", s.asUser(s.handleRunnerRemove))
	mux.HandleFunc("POST "+p+"/runners/join", s.handleRunnerJoin)
	mux.HandleFunc("POST "+p+"/session", s.handleSessionCreate)
	mux.HandleFunc("DELETE "+p+"/session", s.handleSessionDelete)
	mux.HandleFunc("GET "+p+"/events", s.asUser(s.handleEvents))
	mux.HandleFunc("GET "+p+"/audit", s.asUser(s.handleAuditList))
	s.onDemandRoutes(mux)
	s.awsRoutes(mux)
	s.tagRoutes(mux)
	s.uiRoutes(mux)

	mux.HandleFunc("POST "+p+"/runner/heartbeat", s.asRunner(s.handleHeartbeat))
	mux.HandleFunc("POST "+p+"/runner/offline", s.asRunner(s.handleRunnerOffline))
	mux.HandleFunc("POST "+p+"/runner/interruption", s.asRunner(s.handleRunnerInterruption))
	mux.HandleFunc("POST "+p+"/runner/claim", s.asRunner(s.handleClaim))
	mux.HandleFunc("GET "+p+"/runner/jobs/{id}/code", s.asRunner(s.handleJobCode))
	mux.HandleFunc("POST "+p+"/runner/jobs/{id}/status", s.asRunner(s.handleJobStatus))
	mux.HandleFunc("POST "+p+"/runner/jobs/{id}/logs", s.asRunner(s.handleJobLogAppend))
	mux.HandleFunc("GET "+p+"/runner/jobs/{id}/stop", s.asRunner(s.handleJobWaitStop))
	mux.HandleFunc("PUT "+p+"/runner/jobs/{id}/artifacts/{path...}", s.asRunner(s.handleArtifactUpload))
	mux.HandleFunc("GET "+p+"/runner/jobs/{id}/dependencies", s.asRunner(s.handleDependencies))
	mux.HandleFunc("GET "+p+"/runner/jobs/{id}/dependencies/{dep}/artifacts/{path...}", s.asRunner(s.handleDependencyArtifact))

	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, api.Errorf(http.StatusNotFound, api.CodeNotFound,
			"no endpoint %s %s: the API is described at /api/openapi.yaml", r.Method, r.URL.Path))
	})
	return s.metrics.instrument(mux)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if _, err := s.store.UserCount(r.Context()); err != nil {
		ae := api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "database unavailable")
		ae.Cause = api.CauseDatabase
		s.writeError(w, r, ae)
		return
	}
	if st := s.storage.state(); st.cause != "" {
		code := api.CodeUnavailable
		if st.cause != "io_error" {
			code = api.CodeInsufficientStorage
		}
		writeJSON(w, http.StatusServiceUnavailable, api.ErrorBody{
			Status: "degraded", Storage: st.message,
			Error: api.Errorf(http.StatusServiceUnavailable, code, "the server's storage is degraded: %s", st.message),
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": version.Version})
}

// handleVersion answers GET /version without a token: the server's build
// and the limits a client checks before it uploads.
func (s *Server) handleVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.ServerInfo{Version: version.Version, MaxCodeSize: s.cfg.MaxCodeSize})
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request, u *store.User) error {
	writeJSON(w, http.StatusOK, api.User{Name: u.Name, Admin: u.Admin})
	return nil
}
