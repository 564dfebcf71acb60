package runner

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

// scriptedIMDS is a metadata service whose answers a test sets: tokens
// refused with tokenStatus (0: issued), GETs answered with getStatus in
// turn (then 200), and a token required unless v1.
type scriptedIMDS struct {
	mu          sync.Mutex
	tokenStatus int
	getStatus   []int
	v1          bool
	issued      int    // tokens issued
	valid       string // the token GETs accept
	puts, gets  int
}

func (s *scriptedIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path == imdsTokenPath {
		s.puts++
		if r.Method != http.MethodPut || r.Header.Get(imdsTTLHeader) != "300" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		if s.tokenStatus != 0 {
			http.Error(w, "no token", s.tokenStatus)
			return
		}
		s.issued++
		s.valid = "token-" + strconv.Itoa(s.issued)
		w.Header().Set(imdsTTLHeader, r.Header.Get(imdsTTLHeader))
		_, _ = w.Write([]byte(s.valid))
		return
	}
	s.gets++
	if r.URL.Path != "/latest/meta-data/spot/instance-action" {
		http.NotFound(w, r)
		return
	}
	if tok := r.Header.Get(imdsTokenHeader); (tok == "" && !s.v1) || (tok != "" && tok != s.valid) {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if len(s.getStatus) > 0 {
		code := s.getStatus[0]
		s.getStatus = s.getStatus[1:]
		if code != http.StatusOK {
			http.Error(w, "scripted", code)
			return
		}
	}
	_, _ = w.Write([]byte(`{"action":"stop"}`))
}

// TestIMDSClient pins how the runner reads the metadata service, as the AWS
// SDK's client did: one token for many reads, a new one after a 401, IMDSv1
// when tokens are refused, retries of 5xx, a 404 passed on.
func TestIMDSClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		srv        *scriptedIMDS
		between    func(*scriptedIMDS) // after the first read
		wantCode   int                 // of the second read's error; 0: success
		puts, gets int
	}{
		{name: "one token for two reads", puts: 1, gets: 2},
		{name: "new token after a 401", between: func(s *scriptedIMDS) { s.valid = "rotated" }, puts: 2, gets: 3},
		{name: "IMDSv1 when tokens are forbidden", srv: &scriptedIMDS{tokenStatus: http.StatusForbidden, v1: true}, puts: 1, gets: 2},
		{name: "IMDSv1 when the token path is missing", srv: &scriptedIMDS{tokenStatus: http.StatusNotFound, v1: true}, puts: 1, gets: 2},
		{name: "5xx retried", between: func(s *scriptedIMDS) { s.getStatus = []int{500, 503} }, puts: 1, gets: 4},
		{name: "5xx given up after three tries", between: func(s *scriptedIMDS) { s.getStatus = []int{500, 500, 500} }, wantCode: 500, puts: 1, gets: 4},
		{name: "404 passed on", between: func(s *scriptedIMDS) { s.getStatus = []int{404} }, wantCode: 404, puts: 1, gets: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := tt.srv
			if srv == nil {
				srv = &scriptedIMDS{}
			}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			c := newIMDSClient(hs.URL + "/")
			if b, err := c.getMetadata(t.Context(), "spot/instance-action"); err != nil || string(b) != `{"action":"stop"}` {
				t.Fatalf("first read: %q, %v", b, err)
			}
			if tt.between != nil {
				srv.mu.Lock()
				tt.between(srv)
				srv.mu.Unlock()
			}
			b, err := c.getMetadata(t.Context(), "spot/instance-action")
			var status interface{ HTTPStatusCode() int }
			switch {
			case tt.wantCode == 0 && (err != nil || string(b) != `{"action":"stop"}`):
				t.Errorf("second read: %q, %v", b, err)
			case tt.wantCode != 0 && (!errors.As(err, &status) || status.HTTPStatusCode() != tt.wantCode):
				t.Errorf("second read: %q, %v; want status %d", b, err, tt.wantCode)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.puts != tt.puts || srv.gets != tt.gets {
				t.Errorf("%d token requests and %d reads, want %d and %d", srv.puts, srv.gets, tt.puts, tt.gets)
			}
		})
	}
}

// TestIMDSClientBadTokenRequest: a 400 for the token is an error, not a
// reason to read without one.
func TestIMDSClientBadTokenRequest(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(&scriptedIMDS{tokenStatus: http.StatusBadRequest})
	defer hs.Close()
	_, err := newIMDSClient(hs.URL).getMetadata(t.Context(), "spot/instance-action")
	var status interface{ HTTPStatusCode() int }
	if !errors.As(err, &status) || status.HTTPStatusCode() != http.StatusBadRequest {
		t.Errorf("read = %v, want the token request's 400", err)
	}
}
