package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// The audit log records who changed what on the server, when, and from
// where: sign-ins (refused ones too) and sign-outs, tokens, users, the AWS
// account, limits, the on-demand switch and runners removed. Admins read it
// with `dstack audit`, GET /audit and the web UI's Audit page.
//
// A handler records a change right after the store made it, with s.audit,
// and returns what s.audit returns. The store's operations are each one
// transaction of their own and none takes an audit entry with it, so the
// entry cannot be written in the change's transaction; writing it first
// would log changes that then fail. When the entry cannot be written the
// change stands, but the request does not succeed silently: it is answered
// 500 saying the change was made and not recorded, the entry goes to the
// server's log at ERROR with every field, and dstack_audit_failures_total
// counts it. A sign-in is recorded before the session is handed out and is
// refused when it cannot be (nothing changed yet); a refused sign-in, and
// the server's own removals, are logged and counted when they cannot be
// recorded, as there is no change to refuse.
//
// From where is the IP address of the connection's peer (the request's
// RemoteAddr). X-Forwarded-For is not read: the server has no notion of a
// trusted proxy, and any client can send the header. Behind a reverse
// proxy, entries show the proxy's address.

// The audit actions: what Action an entry says was done. Each has a target
// (what it was done to) and a detail object, as written next to it.
const (
	// auditSessionCreate: a user signed in to the web UI. Target: the
	// user's name.
	auditSessionCreate = "session.create"
	// auditSessionFail: a sign-in was refused. No user; target empty;
	// detail: reason.
	auditSessionFail = "session.fail"
	// auditSessionDelete: a user signed out. Target: the user's name.
	auditSessionDelete = "session.delete"
	// auditTokenCreate, auditTokenRevoke: a token was made or revoked.
	// Target: the token's name; detail: its owner, expiry, and for a
	// revoke the runners revoked with it.
	auditTokenCreate = "token.create"
	auditTokenRevoke = "token.revoke"
	// auditUserAdd, auditUserSet, auditUserRm: a user was added, changed
	// (role, caps, quota) or removed. Target: the user's name; detail:
	// what was set. auditAdminTokenReset: `dstack server admin-token
	// --reset` made a new admin token on the server's machine.
	auditUserAdd         = "user.add"
	auditUserSet         = "user.set"
	auditUserRm          = "user.rm"
	auditAdminTokenReset = "user.admin_token_reset"
	// auditAWSPut, auditAWSDelete: the server's AWS account was configured
	// or cleared. Target: the access key ID; detail: region, bucket, AMIs,
	// the previous access key ID, whether the secret changed (never the
	// secret).
	auditAWSPut    = "aws.put"
	auditAWSDelete = "aws.delete"
	// auditKubernetesPut, auditKubernetesDelete: the server's Kubernetes
	// cluster was configured or cleared; the target is the context.
	auditKubernetesPut    = "kubernetes.put"
	auditKubernetesDelete = "kubernetes.delete"
	// auditLimitPut, auditLimitDelete: a limit was set or deleted. Target:
	// the limit (backend/region/instance type, purchase type); detail: its
	// maximum and the previous one.
	auditLimitPut    = "limit.put"
	auditLimitDelete = "limit.delete"
	// auditOnDemandEnable, auditOnDemandDisable: the on-demand switch.
	// Detail: the instances the change terminates.
	auditOnDemandEnable  = "ondemand.enable"
	auditOnDemandDisable = "ondemand.disable"
	// auditBudgetSet: the monthly on-demand budget was set or removed
	// (0). Detail: the budget and its currency.
	auditBudgetSet = "ondemand.budget"
	// auditRunnerRm: a runner was removed, by a user (`dstack runners rm`)
	// or by the server (offline past --runner-retention). Target: the
	// runner's name; detail: its ID and owner.
	auditRunnerRm = "runner.rm"
)

// auditActions are the actions above, in the order docs/audit.md lists
// them.
var auditActions = []string{
	auditSessionCreate, auditSessionFail, auditSessionDelete,
	auditTokenCreate, auditTokenRevoke,
	auditUserAdd, auditUserSet, auditUserRm, auditAdminTokenReset,
	auditAWSPut, auditAWSDelete, auditKubernetesPut, auditKubernetesDelete,
	auditLimitPut, auditLimitDelete,
	auditOnDemandEnable, auditOnDemandDisable, auditBudgetSet,
	auditRunnerRm,
}

// auditServerUser is the user name of the server's own work.
const auditServerUser = "(server)"

// auditTimeout bounds the write of one entry; it is written even when the
// client is gone, since the change it records is made.
const auditTimeout = 10 * time.Second

// clientIP is the IP address of the request's peer, without the port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// audit records that u (nil: no user) did action to target from r's
// client, with detail (a struct or map, marshalled to a JSON object; nil
// for none). A change's handler returns its error: nil once recorded, and
// otherwise a 500 that says the change was made but not recorded (the
// failure is logged and counted).
func (s *Server) audit(r *http.Request, u *store.User, action, target string, detail any) error {
	p := store.AuditAppendParams{Action: action, Target: target, RemoteAddr: clientIP(r)}
	if u != nil {
		p.UserID, p.UserName = u.ID, u.Name
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	if err := s.record(ctx, p, detail); err != nil {
		ae := api.Errorf(http.StatusInternalServerError, api.CodeInternal,
			"the change was made, but it could not be recorded in the audit log (%s): tell the server's admin; the server's log has the entry",
			auditCause(err))
		ae.Cause = api.CauseInternal
		var ue *store.UnavailableError
		if errors.As(err, &ue) {
			ae.Cause = api.CauseDatabase
		}
		return ae
	}
	return nil
}

// auditServer records the server's own work: no user, no address. A
// failure is logged and counted, and returned for the caller's log.
func (s *Server) auditServer(ctx context.Context, action, target string, detail any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	return s.record(ctx, store.AuditAppendParams{UserName: auditServerUser, Action: action, Target: target}, detail)
}

// record writes an entry; a failure is logged at ERROR with the whole
// entry, so that the log keeps what the audit log could not, and counted
// in dstack_audit_failures_total.
func (s *Server) record(ctx context.Context, p store.AuditAppendParams, detail any) error {
	p.ID, p.At = newID(), s.cfg.Now()
	d, err := auditDetail(detail)
	if err == nil {
		p.Detail = d
		_, err = s.store.AuditAppend(ctx, p)
	}
	if err != nil {
		s.metrics.auditFailures.Inc()
		s.log.Error("audit entry not recorded", "action", p.Action, "user", p.UserName, "user_id", p.UserID,
			"target", p.Target, "detail", p.Detail, "remote_addr", p.RemoteAddr, "at", p.At, "err", err)
		return fmt.Errorf("record audit entry %s: %w", p.Action, err)
	}
	return nil
}

// auditDetail marshals detail to a JSON object: nil is {}, and a value
// that is not an object is {"value": ...}.
func auditDetail(detail any) (string, error) {
	if detail == nil {
		return "{}", nil
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return "", fmt.Errorf("audit detail: %w", err)
	}
	if len(b) == 0 || b[0] != '{' {
		if b, err = json.Marshal(map[string]json.RawMessage{"value": b}); err != nil {
			return "", fmt.Errorf("audit detail: %w", err)
		}
	}
	return string(b), nil
}

// auditCause is why an entry was not recorded, for the client: the
// database's reason when it is unavailable, otherwise a word.
func auditCause(err error) string {
	var ue *store.UnavailableError
	if errors.As(err, &ue) {
		return ue.Reason
	}
	return "the database refused it"
}

// auditPruneBatch is how many entries one statement of auditPrune
// deletes: small enough that no writer waits long on it.
const auditPruneBatch = 1000

// auditPrune deletes the entries made before before, a batch at a time,
// until none is left or ctx ends, and returns how many it deleted: the
// retention loop calls it with the same cut as for runs.
func (s *Server) auditPrune(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		n, err := s.store.AuditDeleteBefore(ctx, store.AuditDeleteBeforeParams{Before: before, Limit: auditPruneBatch})
		total += n
		if err != nil {
			return total, fmt.Errorf("delete audit entries: %w", err)
		}
		if n < auditPruneBatch {
			if total > 0 {
				s.log.Info("audit entries deleted under the retention", "entries", total, "before", before)
			}
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// maxAuditPage is the most entries GET /audit answers at once, and how
// many it answers without ?limit.
const maxAuditPage = 1000

// handleAuditList answers a page of the audit log, newest first: the
// entries made at or after ?since=RFC3339 (all without it), ?limit=N of
// them at most, continuing after ?after=CURSOR; the cursor of the next
// page, when more entries follow, is in the NextCursorHeader. Admins only
// (the route is registered with rt.admin).
func (s *Server) handleAuditList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	q := r.URL.Query()
	p := store.AuditListParams{Limit: maxAuditPage}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return invalid("since %q is not a time: give one in RFC 3339, such as 2024-05-01T10:00:00Z", v)
		}
		p.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditPage {
			return invalid("limit %q: give a number of entries from 1 to %d", v, maxAuditPage)
		}
		p.Limit = n
	}
	if v := q.Get("after"); v != "" {
		c, err := parseRunCursor(v)
		if err != nil {
			return invalid("after %q is not a cursor of this listing: pass the %s header of the previous page as it is", v, api.NextCursorHeader)
		}
		p.After = &store.AuditCursor{At: c.SubmittedAt, ID: c.ID}
	}
	limit := p.Limit
	p.Limit++ // one more says whether another page follows
	es, err := s.store.AuditList(r.Context(), p)
	if err != nil {
		return fmt.Errorf("list audit entries: %w", err)
	}
	if len(es) > limit {
		es = es[:limit]
		last := es[limit-1]
		w.Header().Set(api.NextCursorHeader, formatRunCursor(&store.RunCursor{SubmittedAt: last.At, ID: last.ID}))
	}
	out := make([]api.AuditEntry, 0, len(es))
	for _, e := range es {
		out = append(out, api.AuditEntry{
			ID: e.ID, At: e.At.UTC(), User: e.UserName, Action: e.Action, Target: e.Target,
			Detail: json.RawMessage(e.Detail), RemoteAddr: e.RemoteAddr,
		})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// userName is the name of the user id, for an entry's detail; the ID
// itself when the user cannot be read.
func (s *Server) userName(ctx context.Context, id string) string {
	u, err := s.store.UserGet(ctx, id)
	if err != nil {
		return id
	}
	return u.Name
}

// limitTarget names a limit in the audit log: "local/local/local.small
// (on-demand)".
func limitTarget(l *store.Limit) string {
	return fmt.Sprintf("%s/%s/%s (%s)", l.Backend, l.Region, l.InstanceType, purchase(l.Spot))
}
