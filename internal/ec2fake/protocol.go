package ec2fake

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file is EC2's query protocol: reading the form-encoded parameters of a
// request (flattened lists "Name.N", nested "Name.N.Member"), filters and
// pagination, and writing XML answers and EC2's error envelope.

const (
	apiVersion = "2016-11-15"
	namespace  = "http://ec2.amazonaws.com/doc/" + apiVersion + "/"
	timeFormat = "2006-01-02T15:04:05.000Z"
	maxBody    = 1 << 20
)

// handlers are the actions the fake implements. Each runs with s.mu held and
// returns a pointer to its answer's XML struct or an *apiError.
var handlers = map[string]func(*Server, *request) (any, error){
	"DescribeRegions":               (*Server).describeRegions,
	"DescribeAvailabilityZones":     (*Server).describeAvailabilityZones,
	"DescribeInstanceTypeOfferings": (*Server).describeInstanceTypeOfferings,
	"DescribeInstanceTypes":         (*Server).describeInstanceTypes,
	"DescribeSpotPriceHistory":      (*Server).describeSpotPriceHistory,
	"DescribeImages":                (*Server).describeImages,
	"DescribeVpcs":                  (*Server).describeVpcs,
	"DescribeSubnets":               (*Server).describeSubnets,
	"DescribeSecurityGroups":        (*Server).describeSecurityGroups,
	"CreateSecurityGroup":           (*Server).createSecurityGroup,
	"AuthorizeSecurityGroupIngress": (*Server).authorizeSecurityGroupIngress,
	"AuthorizeSecurityGroupEgress":  (*Server).authorizeSecurityGroupEgress,
	"RunInstances":                  (*Server).runInstances,
	"DescribeInstances":             (*Server).describeInstances,
	"TerminateInstances":            (*Server).terminateInstances,
	"CreateTags":                    (*Server).createTags,
	"DeleteTags":                    (*Server).deleteTags,
	"DescribeSpotInstanceRequests":  (*Server).describeSpotInstanceRequests,
	"CancelSpotInstanceRequests":    (*Server).cancelSpotInstanceRequests,
}

// apiError is an EC2 error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// errorf is an EC2 error with HTTP status 400.
func errorf(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// request is one decoded EC2 call.
type request struct {
	action string
	region string
	form   url.Values
	now    time.Time
}

// str is a scalar parameter, "" when absent.
func (r *request) str(key string) string { return r.form.Get(key) }

func (r *request) has(key string) bool { return r.form.Has(key) }

// integer is an integer parameter, def when absent.
func (r *request) integer(key string, def int) (int, error) {
	v := r.form.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errorf("InvalidParameterValue", "Invalid value '%s' for %s.", v, key)
	}
	return n, nil
}

func (r *request) boolean(key string) bool {
	b, _ := strconv.ParseBool(r.form.Get(key))
	return b
}

// timestamp is a time parameter (ISO 8601), zero when absent.
func (r *request) timestamp(key string) (time.Time, error) {
	v := r.form.Get(key)
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errorf("InvalidParameterValue", "Invalid value '%s' for %s.", v, key)
}

// indices are the N of the members "prefix.N" or "prefix.N.…" present,
// ascending. EC2 flattens every list this way.
func (r *request) indices(prefix string) []int {
	var out []int
	p := prefix + "."
	for k := range r.form {
		rest, ok := strings.CutPrefix(k, p)
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || slices.Contains(out, n) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// list is a list of scalars "prefix.1", "prefix.2", ….
func (r *request) list(prefix string) []string {
	var out []string
	for _, n := range r.indices(prefix) {
		if v := r.form.Get(prefix + "." + strconv.Itoa(n)); v != "" {
			out = append(out, v)
		}
	}
	return out
}

type tag struct {
	key, value string
	hasValue   bool
}

// tags is a list of "prefix.N.Key" / "prefix.N.Value".
func (r *request) tags(prefix string) ([]tag, error) {
	var out []tag
	for _, n := range r.indices(prefix) {
		p := prefix + "." + strconv.Itoa(n)
		k := r.form.Get(p + ".Key")
		if k == "" {
			return nil, errorf("InvalidParameterValue", "Tag key must not be empty")
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, errorf("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
		out = append(out, tag{key: k, value: r.form.Get(p + ".Value"), hasValue: r.form.Has(p + ".Value")})
	}
	return out, nil
}

// tagSpecifications reads TagSpecification.N into resource type → tags,
// refusing resource types not in allowed.
func (r *request) tagSpecifications(allowed ...string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, n := range r.indices("TagSpecification") {
		p := "TagSpecification." + strconv.Itoa(n)
		rt := r.form.Get(p + ".ResourceType")
		if !slices.Contains(allowed, rt) {
			return nil, errorf("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		tags, err := r.tags(p + ".Tag")
		if err != nil {
			return nil, err
		}
		if out[rt] == nil {
			out[rt] = map[string]string{}
		}
		for _, t := range tags {
			out[rt][t.key] = t.value
		}
	}
	return out, nil
}

// filter is one Filter.N: a resource matches when one of its values for
// Name matches one of Values (with * and ? wildcards).
type filter struct {
	name   string
	values []string
}

// filters reads Filter.N, refusing names that are neither in known nor a
// "tag:KEY" filter (which is allowed when known holds "tag:").
func (r *request) filters(known ...string) ([]filter, error) {
	var out []filter
	for _, n := range r.indices("Filter") {
		p := "Filter." + strconv.Itoa(n)
		f := filter{name: r.form.Get(p + ".Name"), values: r.list(p + ".Value")}
		ok := slices.Contains(known, f.name) || (strings.HasPrefix(f.name, "tag:") && slices.Contains(known, "tag:"))
		if !ok {
			return nil, errorf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
		out = append(out, f)
	}
	return out, nil
}

// matchFilters reports whether a resource matches every filter; attr gives
// the resource's values for a filter name.
func matchFilters(fs []filter, attr func(name string) []string) bool {
	for _, f := range fs {
		have := attr(f.name)
		ok := false
		for _, want := range f.values {
			for _, h := range have {
				if wildcardMatch(want, h) {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// tagAttr answers the tag filters ("tag:KEY", "tag-key", "tag-value") of a
// resource with tags, and ok=false for other names.
func tagAttr(tags map[string]string, name string) (values []string, ok bool) {
	switch {
	case strings.HasPrefix(name, "tag:"):
		if v, has := tags[strings.TrimPrefix(name, "tag:")]; has {
			return []string{v}, true
		}
		return nil, true
	case name == "tag-key":
		return sortedKeys(tags), true
	case name == "tag-value":
		var vs []string
		for _, k := range sortedKeys(tags) {
			vs = append(vs, tags[k])
		}
		return vs, true
	}
	return nil, false
}

// wildcardMatch matches s against pattern, where * is any run of characters
// and ? any one character, as EC2's filters do.
func wildcardMatch(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	pi, ti, star, mark := 0, 0, -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// page applies MaxResults (within [lo, hi], hi when absent) and NextToken to
// a list of total items: the answer holds items [start, end), and next is
// the token for the rest ("" when none).
func (r *request) page(total, lo, hi int) (start, end int, next string, err error) {
	limit := hi
	if r.has("MaxResults") {
		limit, err = r.integer("MaxResults", hi)
		if err != nil {
			return 0, 0, "", err
		}
		if limit < lo || limit > hi {
			return 0, 0, "", errorf("InvalidParameterValue", "Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and %d.", limit, lo, hi)
		}
	}
	if tok := r.str("NextToken"); tok != "" {
		start, err = decodeToken(r.action, tok)
		if err != nil {
			return 0, 0, "", err
		}
	}
	start = min(start, total)
	end = min(start+limit, total)
	if end < total {
		next = encodeToken(r.action, end)
	}
	return start, end, next, nil
}

func encodeToken(action string, offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(action + ":" + strconv.Itoa(offset)))
}

func decodeToken(action, tok string) (int, error) {
	bad := errorf("InvalidParameterValue", "Invalid value '%s' for nextToken.", tok)
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, bad
	}
	a, n, ok := strings.Cut(string(b), ":")
	if !ok || a != action {
		return 0, bad
	}
	off, err := strconv.Atoi(n)
	if err != nil || off < 0 {
		return 0, bad
	}
	return off, nil
}

// meta is embedded first in every answer struct.
type meta struct {
	RequestID string `xml:"requestId"`
}

func (m *meta) setRequestID(id string) { m.RequestID = id }

// xmlTag is an EC2 tag in an answer's tagSet.
type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func tagSet(tags map[string]string) []xmlTag {
	var out []xmlTag
	for _, k := range sortedKeys(tags) {
		out = append(out, xmlTag{Key: k, Value: tags[k]})
	}
	return out
}

// returnTrue is the answer of actions that only say they succeeded.
type returnTrue struct {
	meta
	Return bool `xml:"return"`
}

// encodeResult renders v as <ActionResponse xmlns=…>.
func encodeResult(action, requestID string, v any) ([]byte, error) {
	if m, ok := v.(interface{ setRequestID(string) }); ok {
		m.setRequestID(requestID)
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	start := xml.StartElement{Name: xml.Name{Space: namespace, Local: action + "Response"}}
	if err := xml.NewEncoder(&b).EncodeElement(v, start); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// encodeError renders EC2's error envelope.
func encodeError(e *apiError, requestID string) []byte {
	type xmlError struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	type envelope struct {
		XMLName   xml.Name   `xml:"Response"`
		Errors    []xmlError `xml:"Errors>Error"`
		RequestID string     `xml:"RequestID"`
	}
	b, _ := xml.Marshal(envelope{Errors: []xmlError{{Code: e.code, Message: e.message}}, RequestID: requestID})
	return append([]byte(xml.Header), b...)
}

func writeXML(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// serveHTTP is the EC2 endpoint: decode, authenticate, apply faults, run the
// action and answer.
func (s *Server) serveHTTP(w http.ResponseWriter, hr *http.Request) {
	reqID := newRequestID()
	fail := func(action string, e *apiError) {
		s.logf("ec2fake: %s → %d %s: %s", action, e.status, e.code, e.message)
		writeXML(w, e.status, encodeError(e, reqID))
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, maxBody+1))
	if err != nil {
		return
	}
	if len(body) > maxBody {
		fail("", errorf("InvalidParameterValue", "The request is too large."))
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		fail("", errorf("MalformedQueryString", "The query string is malformed."))
		return
	}
	for k, v := range hr.URL.Query() {
		form[k] = append(form[k], v...)
	}
	action := form.Get("Action")

	s.mu.Lock()
	s.state.calls[action]++
	s.mu.Unlock()

	if action == "" {
		fail(action, errorf("MissingAction", "The request must contain the parameter Action."))
		return
	}
	region, aerr := s.authenticate(hr, body)
	if aerr != nil {
		fail(action, aerr)
		return
	}

	plan := s.takeFaults(action)
	if plan.delay > 0 {
		t := time.NewTimer(plan.delay)
		select {
		case <-t.C:
		case <-hr.Context().Done():
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			return
		}
	}
	if plan.err != nil {
		fail(action, plan.err)
		return
	}
	h, ok := handlers[action]
	if !ok {
		fail(action, errorf("InvalidAction", "The action %s is not valid for this web service.", action))
		return
	}
	if b, _ := strconv.ParseBool(form.Get("DryRun")); b {
		// The caller is allowed everything: a dry run always would succeed.
		fail(action, &apiError{status: http.StatusPreconditionFailed, code: "DryRunOperation",
			message: "Request would have succeeded, but DryRun flag is set."})
		return
	}

	s.mu.Lock()
	s.advance()
	req := &request{action: action, region: region, form: form, now: s.now()}
	res, err := h(s, req)
	s.mu.Unlock()

	var out []byte
	status := http.StatusOK
	if err == nil {
		out, err = encodeResult(action, reqID, res)
	}
	if err != nil {
		var e *apiError
		if !errors.As(err, &e) {
			e = &apiError{status: http.StatusInternalServerError, code: "InternalError", message: err.Error()}
		}
		status, out = e.status, encodeError(e, reqID)
		s.logf("ec2fake: %s %s → %d %s: %s", region, action, e.status, e.code, e.message)
	} else {
		s.logf("ec2fake: %s %s → 200", region, action)
	}
	if plan.lose {
		s.logf("ec2fake: %s %s: answer lost", region, action)
		dropConnection(w)
		return
	}
	writeXML(w, status, out)
}

// dropConnection closes the client's connection without an answer.
func dropConnection(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// notFound is EC2's "does not exist" error for one or more IDs, e.g. "The
// instance ID 'i-1' does not exist" or "The instance IDs 'i-1, i-2' do not
// exist".
func notFound(code, noun string, ids []string) *apiError {
	if len(ids) == 1 {
		return errorf(code, "The %s '%s' does not exist", noun, ids[0])
	}
	return errorf(code, "The %ss '%s' do not exist", noun, strings.Join(ids, ", "))
}
