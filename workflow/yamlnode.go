package workflow

// Helpers over yaml.v3's node tree: syntax errors with the right line,
// references hidden from the parser, merge keys, typed scalars.

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// unmarshal is yaml.Unmarshal, with any panic of the YAML library turned
// into an error: a malformed file must never take the CLI down.
func unmarshal(data []byte, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return yaml.Unmarshal(data, n)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns a syntax error of yaml.v3 into an *Error with its line.
func (p *parser) yamlError(data []byte, err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		line = problemLine(data, line, msg)
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	p.add(line, "", "", "invalid YAML: %s", msg)
	return p.err()
}

// problemLine finds the line of a syntax error. yaml.v3 reports the line
// where the enclosing construct starts (a list three lines up, say), not the
// line at fault; the first prefix of the file, in whole lines, that fails
// with the same message ends at the line at fault.
func problemLine(data []byte, reported int, msg string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	end, work := 0, 0
	for k, l := range lines {
		end += len(l)
		if k+1 < reported {
			continue
		}
		if work += end; work > 8<<20 {
			break // a huge file: settle for yaml.v3's line
		}
		var n yaml.Node
		err := unmarshal(data[:end], &n)
		if err == nil {
			continue
		}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil && m[2] == msg {
			return k + 1
		}
	}
	return reported
}

// protectRefs hides the ${{ name }} references of a file from the YAML
// parser: in a flow list such as [python train.py --epochs ${{ epochs }}]
// the braces would otherwise start a mapping. Each reference becomes a
// placeholder word, on the same line, that restoreRefs turns back.
func protectRefs(data []byte) ([]byte, *strings.Replacer) {
	if !bytes.Contains(data, []byte("${{")) {
		return data, nil
	}
	prefix := "__dstackref"
	for bytes.Contains(data, []byte(prefix)) {
		prefix += "x"
	}
	var out bytes.Buffer
	var pairs []string
	rest := data
	for {
		i := bytes.Index(rest, []byte("${{"))
		if i < 0 {
			break
		}
		j := bytes.Index(rest[i+3:], []byte("}}"))
		if j < 0 || !refInner.Match(rest[i+3:i+3+j]) {
			out.Write(rest[:i+3])
			rest = rest[i+3:]
			continue
		}
		ref := rest[i : i+3+j+2]
		token := fmt.Sprintf("%s%d_", prefix, len(pairs)/2)
		pairs = append(pairs, token, string(ref))
		out.Write(rest[:i])
		out.WriteString(token)
		rest = rest[i+len(ref):]
	}
	out.Write(rest)
	return out.Bytes(), strings.NewReplacer(pairs...)
}

// refInner is what protectRefs takes for the inside of a reference: no
// quotes, backslashes or line breaks, whose meaning YAML would change.
var refInner = regexp.MustCompile(`^[ \tA-Za-z0-9_.-]*$`)

// restoreRefs undoes protectRefs in every scalar of the tree.
func restoreRefs(n *yaml.Node, r *strings.Replacer) {
	if r == nil || n == nil {
		return
	}
	if n.Kind == yaml.ScalarNode {
		n.Value = r.Replace(n.Value)
	}
	for _, c := range n.Content {
		restoreRefs(c, r)
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

type pair struct{ key, val *yaml.Node }

// pairs lists the entries of a mapping, keys checked for duplicates, with
// the entries of merge keys (<<: *anchor) added where not given explicitly.
func (p *parser) pairs(n *yaml.Node, wf, field string) []pair {
	var out []pair
	seen := map[string]bool{}
	var merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.add(k.Line, wf, field, "keys must be plain words, found %s", kindName(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			merged = append(merged, p.merge(v, wf, field)...)
			continue
		}
		if seen[k.Value] {
			p.add(k.Line, wf, join(field, k.Value), "given twice; remove one of them")
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{k, v})
	}
	for _, kv := range merged {
		if !seen[kv.key.Value] {
			seen[kv.key.Value] = true
			out = append(out, kv)
		}
	}
	return out
}

func (p *parser) merge(v *yaml.Node, wf, field string) []pair {
	p.budget++
	if p.budget > mergeBudget {
		if p.budget == mergeBudget+1 {
			p.add(v.Line, wf, field, "too many merge keys (<<) to follow; simplify the anchors")
		}
		return nil
	}
	v = deref(v)
	switch v.Kind {
	case yaml.MappingNode:
		return p.pairs(v, wf, field)
	case yaml.SequenceNode:
		var out []pair
		for _, m := range v.Content {
			if deref(m).Kind != yaml.MappingNode {
				p.add(m.Line, wf, field, "a merge key (<<) takes a mapping or a list of mappings")
				continue
			}
			out = append(out, p.merge(m, wf, field)...)
		}
		return out
	}
	p.add(v.Line, wf, field, "a merge key (<<) takes a mapping or a list of mappings")
	return nil
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func (p *parser) unknownKey(k *yaml.Node, wf, field string, valid []string) {
	msg := fmt.Sprintf("unknown key %q", k.Value)
	if s := suggest(k.Value, valid); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	p.add(k.Line, wf, field, "%s (valid keys: %s)", msg, strings.Join(valid, ", "))
}

// suggest returns the valid word closest to s when it is close enough to be
// a typo.
func suggest(s string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := distance(strings.ToLower(s), v); d < bestD {
			best, bestD = v, d
		}
	}
	if bestD > len(s)/2 {
		return ""
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar returns a scalar's text; null and non-scalars are reported.
func (p *parser) scalar(n *yaml.Node, wf, field, hint string) (string, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		p.add(n.Line, wf, field, "expected a value, found %s; %s", kindName(n), hint)
		return "", false
	}
	return n.Value, true
}

// str reads a non-empty scalar that may hold variable references.
func (p *parser) str(n *yaml.Node, wf, field, hint string) text {
	s, ok := p.scalar(n, wf, field, hint)
	if ok && strings.TrimSpace(s) == "" {
		p.add(n.Line, wf, field, "must not be empty; %s", hint)
	}
	return text{s, deref(n).Line}
}

// texts reads a list of scalars, or a single scalar as a list of one.
func (p *parser) texts(n *yaml.Node, wf, field, hint string) []text {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
		return []text{p.str(n, wf, field, hint)}
	}
	if n.Kind != yaml.SequenceNode {
		p.add(n.Line, wf, field, "expected a list, found %s; %s", kindName(n), hint)
		return nil
	}
	out := make([]text, 0, len(n.Content))
	for _, item := range n.Content {
		out = append(out, p.str(item, wf, field, hint))
	}
	return out
}
