// Package flaghelp checks the help text of a command tree's flags. pflag
// takes the first `backquoted` word of a flag's usage as the name of its
// value: "your token (printed by `dstack server`)" shows as
// "--token dstack server". Check reports every usage where that happened
// unintentionally, so that a test of each command tree catches it.
package flaghelp

import (
	"fmt"
	"regexp"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// valueName is a value name written on purpose: one upper-case word such
// as SIZE, URL or KEY_ID.
var valueName = regexp.MustCompile(`^[A-Z][A-Z0-9_-]*$`)

// Check walks root and its subcommands and describes every flag whose
// help shows a backquoted phrase as its value's name: a value name that is
// not one upper-case word, or any value name on a boolean flag (which
// takes no value). Quote commands in usages with single or double quotes.
func Check(root *cobra.Command) []string {
	var out []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			name, _ := pflag.UnquoteUsage(f)
			if !backquoted(f.Usage) {
				return
			}
			switch {
			case f.Value.Type() == "bool":
				out = append(out, fmt.Sprintf("%s --%s: a boolean flag shows %q as its value's name (usage %q)", c.CommandPath(), f.Name, name, f.Usage))
			case !valueName.MatchString(name):
				out = append(out, fmt.Sprintf("%s --%s: shows %q as its value's name (usage %q)", c.CommandPath(), f.Name, name, f.Usage))
			}
		}
		c.LocalFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return out
}

var backquotedRe = regexp.MustCompile("`[^`]*`")

func backquoted(usage string) bool { return backquotedRe.MatchString(usage) }
