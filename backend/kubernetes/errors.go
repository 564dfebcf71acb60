package kubernetes

import (
	"errors"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/backend"
)

// classify turns an API server's answer into a *backend.Error of the kind
// the server acts on:
//
//   - 429 Too Many Requests: ErrThrottled, with the Retry-After delay;
//   - 403 Forbidden for an exceeded ResourceQuota: ErrQuota; any other 403:
//     ErrInvalid, saying which permission to grant (docs/kubernetes-rbac.yaml);
//   - 401: ErrInvalid (the kubeconfig's credentials are refused);
//   - 400, 404 of the namespace, 422: ErrInvalid;
//   - anything else (5xx, timeouts, lost connections): no kind, the outcome
//     unknown.
//
// A context's end is returned as it is.
func classify(op string, err error) error {
	if backend.AsIs(err) {
		return err
	}
	out := &backend.Error{Op: op, Err: err}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		out.Reason = err.Error()
		return out
	}
	s := st.Status()
	out.Code = string(s.Reason)
	if out.Code == "" {
		out.Code = http.StatusText(int(s.Code))
	}
	out.Reason = s.Message
	switch {
	case s.Code == http.StatusTooManyRequests || s.Reason == metav1.StatusReasonTooManyRequests:
		out.Kind = backend.ErrThrottled
		if secs, ok := apierrors.SuggestsClientDelay(err); ok && secs > 0 {
			out.RetryAfter = time.Duration(secs) * time.Second
		} else {
			out.RetryAfter = time.Second
		}
	case s.Code == http.StatusForbidden && strings.Contains(s.Message, "exceeded quota"):
		out.Kind = backend.ErrQuota
	case s.Code == http.StatusForbidden:
		out.Kind = backend.ErrInvalid
		out.Reason = s.Message + ": grant the permission to the kubeconfig's user (see docs/kubernetes-rbac.yaml)"
	case s.Code == http.StatusUnauthorized:
		out.Kind = backend.ErrInvalid
		out.Reason = s.Message + ": the kubeconfig's credentials are refused; give a current kubeconfig with `dstack kubernetes config`"
	case s.Code == http.StatusBadRequest || s.Code == http.StatusUnprocessableEntity:
		out.Kind = backend.ErrInvalid
	case s.Code == http.StatusNotFound && s.Details != nil && s.Details.Kind == "namespaces":
		out.Kind = backend.ErrInvalid
	}
	return out
}
