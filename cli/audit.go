package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (e *Env) auditCmd() *cobra.Command {
	var (
		since  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "audit [--since 24h|TIME] [--json]",
		Short: "Show who changed what on the server (admins)",
		Long: `Show the server's audit log, newest first: sign-ins (refused ones too) and
sign-outs of the web UI, tokens made and revoked, users added, changed and
removed, the AWS account configured and cleared, limits set and deleted, the
on-demand switch, and runners removed. Each entry says when, who (by their
name then; "(server)" for what the server did by itself, such as removing
runners offline past --runner-retention), the action, its target, the IP
address the request came from and the details. Only an admin may read it.`,
		Example: `  dstack audit
  dstack audit --since 7d
  dstack audit --since 2024-05-01T00:00:00Z --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseSince(e.Now(), since)
			if err != nil {
				return &usageError{err: err}
			}
			return e.audit(cmd.Context(), t, asJSON)
		},
	}
	cmd.Flags().StringVar(&since, "since", "24h", "only entries made since: a duration such as 24h or 7d, or a time such as 2024-05-01T10:00:00Z")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of entries")
	return cmd
}

func (e *Env) audit(ctx context.Context, since time.Time, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	es, err := c.AuditList(ctx, since)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, es)
	}
	if len(es) == 0 {
		fmt.Fprintf(e.Stderr, "Nothing recorded since %s.\n", since.Local().Format("2006-01-02 15:04:05"))
		return nil
	}
	t := newTable(e.Stdout, "time", "user", "action", "target", "from", "detail")
	for _, en := range es {
		t.row(en.At.Local().Format("2006-01-02 15:04:05"), en.User, en.Action, en.Target, en.RemoteAddr, formatDetail(en.Detail))
	}
	return t.flush()
}

// formatDetail writes an entry's detail object as key=value pairs by key:
// strings as they are (quoted when they hold a space or are empty), other
// values as JSON.
func formatDetail(raw json.RawMessage) string {
	var d map[string]json.RawMessage
	if err := json.Unmarshal(raw, &d); err != nil {
		return string(raw)
	}
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := string(bytes.TrimSpace(d[k]))
		var s string
		if json.Unmarshal(d[k], &s) == nil {
			v = s
			if s == "" || strings.ContainsAny(s, " \t\"=") {
				v = fmt.Sprintf("%q", s)
			}
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}
