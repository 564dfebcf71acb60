package aws

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"strings"
	"text/template"
)

// TagJoinToken is the instance tag that carries an instance's join token
// when its launch had more than one instance (see the package doc). The
// instance reads it from its metadata (tags/instance/dstack:join-token);
// List never returns it.
const TagJoinToken = "dstack:join-token"

//go:embed userdata.sh.tmpl
var userDataText string

var userDataTmpl = template.Must(template.New("userdata").Funcs(template.FuncMap{"sq": shellQuote}).Parse(userDataText))

// userData is the boot script's input.
type userData struct {
	ServerURL string
	JoinToken string // empty when each instance reads its own from its tag
	TokenTag  string
	Spot      bool
}

// render is the boot script, base64-encoded for RunInstances.
func (u userData) render() (string, error) {
	if u.TokenTag == "" {
		u.TokenTag = TagJoinToken
	}
	var buf bytes.Buffer
	if err := userDataTmpl.Execute(&buf, u); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// shellQuote quotes s for sh: 'it'\”s'.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
