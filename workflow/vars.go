package workflow

import (
	"errors"
	"fmt"
	"strings"
)

// undefinedError is a reference to a variable that is not declared.
type undefinedError struct{ name string }

func (e *undefinedError) Error() string { return fmt.Sprintf("undefined variable %q", e.name) }

// expand substitutes the ${{ name }} references of s with lookup. $${{ is a
// literal ${{. Values are not scanned again.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${{") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${{")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${{")
			s = s[i+3:]
			continue
		}
		b.WriteString(s[:i])
		rest := s[i+3:]
		j := strings.Index(rest, "}}")
		if j < 0 {
			return "", errors.New("a ${{ has no closing }}; write ${{ name }}, or $${{ for a literal ${{")
		}
		name := strings.TrimSpace(rest[:j])
		name = strings.TrimPrefix(name, "variables.")
		if !varNamePattern.MatchString(name) {
			return "", fmt.Errorf("${{%s}} is not a variable reference; write ${{ name }}", rest[:j])
		}
		v, ok := lookup(name)
		if !ok {
			return "", &undefinedError{name}
		}
		b.WriteString(v)
		s = rest[j+2:]
	}
}

// splitWords splits s into words the way a POSIX shell does, without any
// expansion: a ${{ reference }} is part of a word, blanks separate words, single quotes keep everything, double
// quotes keep everything but \" \\ \$ and \`, and a backslash outside quotes
// keeps the next character.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.HasPrefix(s[i:], "${{") {
			// A variable reference is one piece of a word, whatever its spacing.
			if j := strings.Index(s[i:], "}}"); j >= 0 {
				inWord = true
				cur.WriteString(s[i : i+j+2])
				i += j + 1
				continue
			}
		}
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if strings.HasPrefix(s[i:], "${{") {
					if j := strings.Index(s[i:], "}}"); j >= 0 {
						cur.WriteString(s[i : i+j+2])
						i += j + 1
						continue
					}
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
		case c == '\\':
			inWord = true
			if i+1 < len(s) {
				i++
				if s[i] != '\n' {
					cur.WriteByte(s[i])
				}
			}
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// shellQuote quotes s for a POSIX shell, leaving plain words as they are.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=./,:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
