package cli

import (
	"fmt"
	"regexp"
	"strings"
)

// runArgs is the command line of `dstack run`, which cobra cannot parse:
// the words after the workflow's name are the workflow's variables.
//
//	dstack run [--dir DIR] [--max-code-size SIZE] [--wait-server DURATION] [-d [--json]] WORKFLOW [--NAME VALUE | --NAME=VALUE | -d]...
//
// The run's own options go before WORKFLOW. After it, every --NAME VALUE
// (or --NAME=VALUE) sets the variable NAME, except the options that keep
// their meaning anywhere: -d/--detach, -h/--help and those of
// optionsAfterWorkflow (--max-code-size, --wait-server). --dir, which says where the
// workflow is found, goes before it; after it, --dir is a variable. A value
// is the next word whatever it looks like (--lr -0.1), unless it starts
// with "--": that is taken for a missing value; write --NAME=--VALUE to
// pass one. A variable given twice takes its last value.
//
// --json (with -d) goes before the workflow's name; after it, --json is
// the option only where no value follows it (at the end, or before another
// --NAME), so that a variable named json keeps working.
type runArgs struct {
	Workflow    string
	Vars        map[string]string
	Detach      bool
	JSON        bool // print the submitted run as JSON (with Detach)
	Help        bool
	Dir         string
	MaxCodeSize string // as given; empty for the default
	WaitServer  string // --wait-server as given; empty for the default
	// Resume is the run that --resume RUN runs again, from its jobs'
	// checkpoints; it takes the place of WORKFLOW.
	Resume string
}

// optionsAfterWorkflow are the run's options with a value that are taken
// as options, not variables, after the workflow's name too.
var optionsAfterWorkflow = map[string]bool{"--max-code-size": true, "--wait-server": true}

// varName is what the workflows file accepts as a variable's name.
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// parseRunArgs parses the arguments of `dstack run` (after "run"). Its
// errors are usage errors.
func parseRunArgs(args []string) (runArgs, error) {
	r := runArgs{Vars: map[string]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch a {
		case "-h", "--help":
			r.Help = true
			continue
		case "-d", "--detach":
			r.Detach = true
			continue
		case "--json":
			if r.Workflow == "" || i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				r.JSON = true
				continue
			}
		}
		if r.Workflow == "" {
			// Before the workflow's name: the run's own options.
			name, value, hasValue := strings.Cut(a, "=")
			switch name {
			case "--dir", "--max-code-size", "--wait-server", "--resume":
				if !hasValue {
					if i+1 >= len(args) {
						return r, usagef("%s needs a value", name)
					}
					i++
					value = args[i]
				}
				switch name {
				case "--dir":
					r.Dir = value
				case "--wait-server":
					r.WaitServer = value
				case "--resume":
					if value == "" {
						return r, usagef("--resume needs the name of a run: dstack run --resume RUN")
					}
					r.Resume = value
				default:
					r.MaxCodeSize = value
				}
				continue
			}
			if r.Resume != "" {
				return r, usagef("unexpected argument %q: dstack run --resume RUN runs the run's own workflows again, and takes no workflow or variables", a)
			}
			if strings.HasPrefix(a, "-") {
				return r, usagef("unknown option %q before the workflow's name: dstack run [--dir DIR] [--max-code-size SIZE] [--wait-server DURATION] [-d [--json]] WORKFLOW [--VAR VALUE]...", a)
			}
			if a == "" {
				return r, usagef("the workflow's name is empty")
			}
			r.Workflow = a
			continue
		}
		if !strings.HasPrefix(a, "--") {
			if strings.HasPrefix(a, "-") {
				return r, usagef("unknown option %q: variables are passed as --NAME VALUE", a)
			}
			return r, usagef("unexpected argument %q: only one workflow runs at a time, and variables are passed as --NAME VALUE", a)
		}
		if opt, value, hasValue := strings.Cut(a, "="); optionsAfterWorkflow[opt] {
			if !hasValue {
				if i+1 >= len(args) {
					return r, usagef("%s needs a value", opt)
				}
				i++
				value = args[i]
			}
			if opt == "--wait-server" {
				r.WaitServer = value
			} else {
				r.MaxCodeSize = value
			}
			continue
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		if name == "" {
			return r, usagef("%q is not a variable: pass variables as --NAME VALUE", a)
		}
		if !varName.MatchString(name) {
			return r, usagef("%q is not a valid variable name: use letters, digits, '_' and '-', starting with a letter or '_'", name)
		}
		if !hasValue {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return r, usagef("variable --%s needs a value: --%s VALUE or --%s=VALUE", name, name, name)
			}
			i++
			value = args[i]
		}
		r.Vars[name] = value
	}
	if r.Resume != "" && !r.Help {
		if r.Workflow != "" {
			return r, usagef("--resume %s runs an earlier run again: it takes no workflow (%s)", r.Resume, r.Workflow)
		}
		if r.JSON && !r.Detach {
			return r, usagef("--json prints the resumed run and goes with -d: dstack run -d --json --resume %s", r.Resume)
		}
		return r, nil
	}
	if r.Workflow == "" && !r.Help {
		return r, usagef("missing WORKFLOW: dstack run WORKFLOW [--VAR VALUE]... [-d]")
	}
	if r.JSON && !r.Detach && !r.Help {
		return r, usagef("--json prints the submitted run and goes with -d: dstack run -d --json %s", r.Workflow)
	}
	return r, nil
}

// args writes r back as arguments that parse to r.
func (r runArgs) args() []string {
	var out []string
	if r.Dir != "" {
		out = append(out, "--dir="+r.Dir)
	}
	if r.MaxCodeSize != "" {
		out = append(out, "--max-code-size="+r.MaxCodeSize)
	}
	if r.WaitServer != "" {
		out = append(out, "--wait-server="+r.WaitServer)
	}
	if r.Help {
		out = append(out, "--help")
	}
	if r.JSON {
		out = append(out, "--json")
	}
	if r.Resume != "" {
		out = append(out, "--resume="+r.Resume)
	}
	if r.Workflow != "" {
		out = append(out, r.Workflow)
	}
	for k, v := range r.Vars {
		out = append(out, fmt.Sprintf("--%s=%s", k, v))
	}
	if r.Detach {
		out = append(out, "-d")
	}
	return out
}
