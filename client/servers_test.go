package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/dstackai/dstack/api"
)

// closedURL is the URL of a loopback port that nothing listens on: a
// connection to it is refused.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// echoServer answers every request with its body, and keeps the paths it
// was asked for.
func echoServer(t *testing.T) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"size": 5}`))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), paths...)
	}
}

// A client that knows a server by several addresses moves to the next one
// when a connection is refused, and sends the request there at once, body
// and all; it stays there for the calls that follow, in every copy of the
// client.
func TestClientMovesToTheNextAddress(t *testing.T) {
	t.Parallel()
	dead := closedURL(t)
	srv, seen := echoServer(t)
	c, err := New(dead+", "+srv.URL+"/", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BaseURL(); got != dead {
		t.Fatalf("BaseURL() = %s before any call, want the first address %s", got, dead)
	}
	ctx := context.Background()
	size, err := c.JobLogAppend(ctx, "j1", 1, 0, []byte("hello"))
	if err != nil || size != 5 {
		t.Fatalf("JobLogAppend through the second address: size %d, %v", size, err)
	}
	if got := c.BaseURL(); got != srv.URL {
		t.Errorf("BaseURL() = %s after the first address refused, want %s", got, srv.URL)
	}
	// A copy with another token shares the address in use.
	if err := c.WithToken("other").RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"POST /api/v1/runner/jobs/j1/logs hello", "POST /api/v1/runner/heartbeat {}"}
	if got := seen(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("the live address was asked %q, want %q", got, want)
	}
}

// When every address refuses, the call fails saying it could not reach the
// server, and the next call starts from the address after the last one
// tried.
func TestClientEveryAddressRefuses(t *testing.T) {
	t.Parallel()
	a, b := closedURL(t), closedURL(t)
	c, err := New(a+","+b, "tok")
	if err != nil {
		t.Fatal(err)
	}
	err = c.RunnerHeartbeat(context.Background(), api.HeartbeatRequest{})
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.URL != b {
		t.Fatalf("heartbeat with no address reachable: %v, want an UnreachableError of %s", err, b)
	}
	if !Retryable(err) {
		t.Errorf("Retryable(%v) = false: a caller would give up on a server that may come back", err)
	}
	if got := c.BaseURL(); got != a {
		t.Errorf("BaseURL() = %s after both failed, want the first again, %s", got, a)
	}
}

// A body that cannot be sent again (not a Seeker) is not: the call fails
// on the refused address, and the caller's retry goes to the next one.
func TestClientDoesNotResendAStream(t *testing.T) {
	t.Parallel()
	dead := closedURL(t)
	srv, seen := echoServer(t)
	c, err := New(dead+","+srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	stream := io.MultiReader(strings.NewReader("code")) // no Seek
	if _, err := c.CodeUpload(context.Background(), stream); err == nil {
		t.Fatal("an upload of a stream was sent again to the next address")
	}
	if got := c.BaseURL(); got != srv.URL {
		t.Errorf("BaseURL() = %s after the refusal, want %s", got, srv.URL)
	}
	if _, err := c.CodeUpload(context.Background(), bytes.NewReader([]byte("code"))); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if got := seen(); len(got) != 1 || got[0] != "POST /api/v1/code code" {
		t.Errorf("the live address was asked %q, want one upload", got)
	}
}

func TestNewRefusesABadAddressInTheList(t *testing.T) {
	t.Parallel()
	if _, err := New("http://a:3000,ftp://b", ""); err == nil || !strings.Contains(err.Error(), `"ftp://b"`) {
		t.Errorf("New with ftp://b in the list: %v, want an error naming it", err)
	}
}
