package ec2fake

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file is the instance metadata service: one listener per instance,
// speaking IMDSv2 (PUT /latest/api/token, then GETs carrying the token).
// Without a token a GET is answered only when the instance allows IMDSv1
// (HttpTokens optional); a wrong or expired token is always refused with 401.
// With HttpEndpoint disabled every request gets 403.

const (
	imdsTokenHeader = "X-Aws-Ec2-Metadata-Token"
	imdsTTLHeader   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	imdsMaxTTL      = 21600
)

type imdsServer struct {
	url    string
	srv    *http.Server
	tokens map[string]time.Time // token → expiry; guarded by Server.mu
}

func (m *imdsServer) close() { _ = m.srv.Close() }

// startIMDS starts the instance's metadata service. Called with s.mu held.
func (s *Server) startIMDS(in *instance) {
	select {
	case <-s.done:
		return
	default:
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", s.opts.IMDSListen)
	if err != nil {
		s.logf("ec2fake: %s: metadata service: %v", in.ID, err)
		return
	}
	id := in.ID
	m := &imdsServer{url: "http://" + ln.Addr().String(), tokens: map[string]time.Time{}}
	m.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveIMDS(id, m, w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	in.imds = m
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logf("ec2fake: %s: metadata service: %v", id, err)
		}
	}()
}

func (s *Server) serveIMDS(id string, m *imdsServer, w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.advance()
	now := s.now()
	in, ok := s.state.instances[id]
	if !ok || in.imds != m {
		s.mu.Unlock()
		http.Error(w, "instance is gone", http.StatusServiceUnavailable)
		return
	}
	if !in.imdsEnabled {
		s.mu.Unlock()
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}

	if r.URL.Path == "/latest/api/token" {
		defer s.mu.Unlock()
		if r.Method != http.MethodPut {
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get(imdsTTLHeader))
		if err != nil || ttl < 1 || ttl > imdsMaxTTL {
			http.Error(w, "Bad Request", http.StatusBadRequest)
			return
		}
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		token := base64.RawURLEncoding.EncodeToString(b)
		m.tokens[token] = now.Add(time.Duration(ttl) * time.Second)
		w.Header().Set(imdsTTLHeader, strconv.Itoa(ttl))
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(token))
		return
	}

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.mu.Unlock()
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if token := r.Header.Get(imdsTokenHeader); token != "" {
		exp, ok := m.tokens[token]
		if !ok || !now.Before(exp) {
			s.mu.Unlock()
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
	} else if in.HTTPTokensRequired {
		s.mu.Unlock()
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	body, contentType, found := s.metadata(in, r.URL.Path)
	s.mu.Unlock()
	if !found {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write([]byte(body))
}

// metadata is the answer to a GET of path. Called with s.mu held.
func (s *Server) metadata(in *instance, path string) (body, contentType string, found bool) {
	const text, jsonType = "text/plain", "application/json"
	lifecycle := "on-demand"
	if in.Spot {
		lifecycle = "spot"
	}
	zoneID := ""
	for _, z := range zonesOf(in.Region) {
		if z.name == in.AZ {
			zoneID = z.id
		}
	}
	hostname := "ip-" + strings.ReplaceAll(in.privateIP, ".", "-") + "." + in.Region + ".compute.internal"
	var groupNames []string
	for _, g := range s.groupSet(in.SecurityGroupIDs) {
		groupNames = append(groupNames, g.GroupName)
	}
	leaves := map[string]string{
		"ami-id":                         in.ImageID,
		"ami-launch-index":               strconv.Itoa(in.LaunchIndex),
		"hostname":                       hostname,
		"instance-id":                    in.ID,
		"instance-life-cycle":            lifecycle,
		"instance-type":                  in.InstanceType,
		"local-hostname":                 hostname,
		"local-ipv4":                     in.privateIP,
		"placement/availability-zone":    in.AZ,
		"placement/availability-zone-id": zoneID,
		"placement/region":               in.Region,
		"security-groups":                strings.Join(groupNames, "\n"),
	}
	switch {
	case path == "/latest/user-data":
		return in.UserData, "application/octet-stream", in.UserData != ""
	case path == "/latest/dynamic/instance-identity/document":
		doc, _ := json.MarshalIndent(map[string]any{
			"accountId": Account, "architecture": in.arch, "availabilityZone": in.AZ, "imageId": in.ImageID,
			"instanceId": in.ID, "instanceType": in.InstanceType, "pendingTime": in.LaunchTime.UTC().Format(time.RFC3339),
			"privateIp": in.privateIP, "region": in.Region, "version": "2017-09-30",
		}, "", "  ")
		return string(doc), jsonType, true
	case path == "/latest/meta-data" || path == "/latest/meta-data/":
		listing := "ami-id\nami-launch-index\nhostname\ninstance-id\ninstance-life-cycle\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\nsecurity-groups"
		if !in.interruptAt.IsZero() {
			listing += "\nspot/"
		}
		if in.MetadataTags {
			listing += "\ntags/"
		}
		return listing, text, true
	case path == "/latest/meta-data/placement" || path == "/latest/meta-data/placement/":
		return "availability-zone\navailability-zone-id\nregion", text, true
	}
	leaf, ok := strings.CutPrefix(path, "/latest/meta-data/")
	if !ok {
		return "", "", false
	}
	if v, ok := leaves[leaf]; ok {
		return v, text, true
	}
	switch {
	case leaf == "spot" || leaf == "spot/":
		return "instance-action", text, !in.interruptAt.IsZero()
	case leaf == "spot/instance-action":
		if in.interruptAt.IsZero() {
			return "", "", false
		}
		b, _ := json.Marshal(map[string]string{"action": "terminate", "time": in.interruptAt.UTC().Format(time.RFC3339)})
		return string(b), jsonType, true
	case leaf == "tags/instance" || leaf == "tags/instance/":
		if !in.MetadataTags {
			return "", "", false
		}
		return strings.Join(sortedKeys(in.Tags), "\n"), text, true
	case strings.HasPrefix(leaf, "tags/instance/"):
		if !in.MetadataTags {
			return "", "", false
		}
		v, ok := in.Tags[strings.TrimPrefix(leaf, "tags/instance/")]
		return v, text, ok
	}
	return "", "", false
}
