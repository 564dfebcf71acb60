package ec2fake

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// sigV4 is the parsed Authorization header of a SigV4-signed request.
type sigV4 struct {
	accessKey     string
	region        string
	service       string
	signedHeaders []string
	signature     string
}

func parseAuthorization(h string) (sigV4, bool) {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return sigV4{}, false
	}
	var sig sigV4
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			scope := strings.Split(v, "/")
			if len(scope) != 5 || scope[4] != "aws4_request" {
				return sigV4{}, false
			}
			sig.accessKey, sig.region, sig.service = scope[0], scope[2], scope[3]
		case "SignedHeaders":
			sig.signedHeaders = strings.Split(v, ";")
		case "Signature":
			sig.signature = v
		}
	}
	if sig.accessKey == "" || sig.signature == "" || len(sig.signedHeaders) == 0 {
		return sigV4{}, false
	}
	return sig, true
}

// authenticate checks the request's SigV4 signature against
// Options.Credentials and returns the region of its credential scope.
func (s *Server) authenticate(r *http.Request, body []byte) (string, *apiError) {
	authFailure := &apiError{status: http.StatusUnauthorized, code: "AuthFailure",
		message: "AWS was not able to validate the provided access credentials"}
	h := r.Header.Get("Authorization")
	if h == "" {
		if len(s.opts.Credentials) > 0 {
			return "", &apiError{status: http.StatusUnauthorized, code: "MissingAuthenticationToken",
				message: "Request is missing Authentication Token"}
		}
		return s.opts.Regions[0], nil
	}
	sig, ok := parseAuthorization(h)
	if !ok {
		return "", &apiError{status: http.StatusBadRequest, code: "IncompleteSignature",
			message: "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters."}
	}
	if !slices.Contains(s.opts.Regions, sig.region) {
		return "", authFailure
	}
	if len(s.opts.Credentials) == 0 {
		return sig.region, nil
	}
	secret, ok := s.opts.Credentials[sig.accessKey]
	if !ok {
		return "", authFailure
	}
	mismatch := &apiError{status: http.StatusForbidden, code: "SignatureDoesNotMatch",
		message: "The request signature we calculated does not match the signature you provided. " +
			"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}
	if sig.service != "ec2" {
		return "", mismatch
	}
	signingTime, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", mismatch
	}

	// Sign a copy of the request holding only the headers the client signed,
	// with the secret we know, and compare the signatures.
	cp, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body)) //nolint:gosec // only signed, never sent
	if err != nil {
		return "", mismatch
	}
	cp.Host = r.Host
	cp.ContentLength = int64(len(body))
	for _, name := range sig.signedHeaders {
		if name == "host" || name == "content-length" {
			continue
		}
		cp.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: sig.accessKey, SecretAccessKey: secret,
		SessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, cp, hex.EncodeToString(sum[:]), "ec2", sig.region, signingTime); err != nil {
		return "", mismatch
	}
	want, ok := parseAuthorization(cp.Header.Get("Authorization"))
	if !ok || !hmac.Equal([]byte(want.signature), []byte(sig.signature)) {
		return "", mismatch
	}
	return sig.region, nil
}
