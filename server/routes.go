package server

import (
	"context"
	"net/http"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/version"
)

// userHandler serves a request authenticated as a user.
type userHandler func(w http.ResponseWriter, r *http.Request, u *store.User) error

// runnerHandler serves a request authenticated as a runner.
type runnerHandler func(w http.ResponseWriter, r *http.Request, rn *store.Runner) error

// tokenKey is the context key of the token a user's request was made with.
type tokenKey struct{}

// requestToken is the token a user's request was made with (its session's
// for a browser).
func requestToken(r *http.Request) *store.Token {
	t, _ := r.Context().Value(tokenKey{}).(*store.Token)
	return t
}

func (s *Server) asUser(h userHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, tok, err := s.auth.user(r)
		if err == nil {
			r = r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok))
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

// onFreshStack runs f on a new goroutine and waits for it; a panic of f
// goes on in the caller. A goroutine's stack grows to what its deepest
// call needed (the SQLite engine's calls need tens of KiB) and shrinks
// back only slowly, at garbage collections; a goroutine that lives long and
// mostly waits (a connection between requests, a long-poll) keeps a small
// stack when its deep calls run on a goroutine that ends with them. A
// runner's connections live long and mostly wait (one for a job, one for
// its next heartbeat): with 10,000 runners their stacks are a large part of
// the server's memory.
func onFreshStack(f func()) {
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		f()
	}()
	if p := <-done; p != nil {
		panic(p)
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	rt := &router{s: s, mux: mux}
	p := api.PathPrefix
	rt.public("GET /healthz", s.handleHealth)
	rt.public("GET /metrics", s.metrics.handler().ServeHTTP)
	rt.public("GET /api/openapi.yaml", serveOpenAPI)
	rt.public("GET /runner", s.handleRunnerInstaller)
	rt.public("GET /runner/download/{os}/{arch}/dstack-runner", s.handleRunnerBinary)
	rt.public("GET /runner/download/{os}/{arch}/dstack-runner.sha256", s.handleRunnerChecksum)

	rt.member("GET "+p+"/me", s.handleMe)
	rt.public("GET "+p+"/version", s.handleVersion)
	rt.member("POST "+p+"/code", s.handleCodeUpload)
	rt.member("POST "+p+"/runs", s.handleRunSubmit)
	rt.member("GET "+p+"/runs", s.handleRunList)
	rt.member("GET "+p+"/runs/{name}", s.handleRunGet)
	rt.member("POST "+p+"/runs/{name}/stop", s.handleRunStop)
	rt.member("DELETE "+p+"/runs/{name}", s.handleRunDelete)
	rt.member("GET "+p+"/runs/{name}/artifacts", s.handleArtifactList)
	rt.member("GET "+p+"/runs/{name}/checkpoints", s.handleRunCheckpoints)
	rt.member("POST "+p+"/runs/{name}/resume", s.handleRunResume)
	rt.member("GET "+p+"/jobs/{id}/logs", s.handleJobLogs)
	rt.member("GET "+p+"/jobs/{id}/artifacts/{path...}", s.handleArtifactDownload)
	rt.member("GET "+p+"/runners", s.handleRunnerList)
	rt.member("POST "+p+"/runners/register", s.handleRunnerRegister)
	rt.member("DELETE "+p+"/runners/{ref}", s.handleRunnerRemove) // a member's own runners, an admin's any
	rt.public("POST "+p+"/runners/join", s.handleRunnerJoin)      // checks the instance's join token
	rt.public("POST "+p+"/session", s.handleSessionCreate)        // checks the token in the body
	rt.public("DELETE "+p+"/session", s.handleSessionDelete)
	rt.member("GET "+p+"/events", s.handleEvents)
	rt.admin("GET "+p+"/audit", "read the audit log", s.handleAuditList)
	s.userRoutes(rt)
	s.onDemandRoutes(rt)
	s.usageRoutes(rt)
	s.awsRoutes(rt)
	s.kubeRoutes(rt)
	s.tagRoutes(rt)
	s.uiRoutes(rt)

	rt.runner("POST "+p+"/runner/heartbeat", s.handleHeartbeat)
	rt.runner("POST "+p+"/runner/offline", s.handleRunnerOffline)
	rt.runner("POST "+p+"/runner/interruption", s.handleRunnerInterruption)
	rt.runner("POST "+p+"/runner/claim", s.handleClaim)
	rt.runner("GET "+p+"/runner/jobs/{id}/code", s.handleJobCode)
	rt.runner("POST "+p+"/runner/jobs/{id}/status", s.handleJobStatus)
	rt.runner("POST "+p+"/runner/jobs/{id}/logs", s.handleJobLogAppend)
	rt.runner("GET "+p+"/runner/jobs/{id}/stop", s.handleJobWaitStop)
	rt.runner("PUT "+p+"/runner/jobs/{id}/artifacts/{path...}", s.handleArtifactUpload)
	rt.runner("GET "+p+"/runner/jobs/{id}/dependencies", s.handleDependencies)
	rt.runner("GET "+p+"/runner/jobs/{id}/checkpoint", s.handleCheckpointGet)
	rt.runner("POST "+p+"/runner/jobs/{id}/checkpoint", s.handleCheckpointCommit)
	rt.runner("POST "+p+"/runner/jobs/{id}/checkpoint/missing", s.handleCheckpointMissing)
	rt.runner("PUT "+p+"/runner/jobs/{id}/checkpoint/blobs/{sha256}", s.handleCheckpointBlobUpload)
	rt.runner("GET "+p+"/runner/jobs/{id}/checkpoint/blobs/{sha256}", s.handleCheckpointBlob)
	rt.runner("GET "+p+"/runner/jobs/{id}/dependencies/{dep}/artifacts/{path...}", s.handleDependencyArtifact)

	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, api.Errorf(http.StatusNotFound, api.CodeNotFound,
			"no endpoint %s %s: the API is described at /api/openapi.yaml", r.Method, r.URL.Path))
	})
	s.routeTable = rt.table
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
