package workflow

import (
	"slices"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics and that every file it accepts
// resolves each of its workflows, with and without (harmless) overrides, dependencies
// always before their dependents, tagged dependencies well-formed and never
// also in-run ones.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		productExample,
		string(Sample()),
		"",
		"workflows: []\n",
		"workflows:\n  - {name: a, provider: bash, commands: [ls], depends-on: [a]}\n",
		"variables: {x: 1}\nworkflows:\n  - {name: a, provider: python, file: a.py, args: '--x ${{ x }}', version: '3.${{x}}'}\n",
		"workflows:\n  - &a {name: a, provider: docker, image: 'i:${{ t }}', commands: [ls], variables: {t: 1}}\n  - {<<: *a, name: b, depends-on: a}\n",
		"workflows:\n  - name: a\n    provider: bash\n    commands: ['$${{ x }}', \"${{ y\"]\n    env: [A=1, B=${{ z }}]\n",
		"workflows:\n  - {name: a, provider: bash, commands: [ls], depends-on: [a:latest, 'b:v1.0', c]}\n  - {name: c, provider: bash, commands: [ls], depends-on: ['c:x']}\n",
		"workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on:\n      - 'b:'\n      - ':t'\n      - b:c:d\n      - b\n      - b:t\n",
		"x-d: &d {provider: bash}\nworkflows:\n  - <<: *d\n    name: a\n    commands: [ls]\n    resources: {cpu: 1, memory: 1.5GB, gpu: {name: A100, memory: 40GB}, shm_size: 1GB, interruptible: true}\n    artifacts: [{path: out}, '${{ d }}']\n    variables: {d: x}\n",
	} {
		f.Add([]byte(seed))
	}
	for _, seed := range []string{
		"workflows:\n  - {name: a, provider: bash, commands: [ls], checkpoints: [ckpt, ./ckpt/, out/x], checkpoint-interval: 30s, keep-checkpoints: true}\n",
		"workflows:\n  - {name: a, provider: bash, commands: [ls], checkpoints: ['../x', /abs, '.', 'a\\b'], checkpoint-interval: 0s}\n",
		"workflows:\n  - {name: a, provider: bash, commands: [ls], checkpoint-interval: 5m}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for _, name := range file.Names() {
			specs, err := file.Resolve(name, nil)
			if err != nil {
				t.Fatalf("Parse accepted the file but Resolve(%q) failed: %v", name, err)
			}
			if len(specs) == 0 || specs[len(specs)-1].Workflow != name {
				t.Fatalf("Resolve(%q) does not end with the workflow: %+v", name, specs)
			}
			var seen []string
			for _, s := range specs {
				for _, d := range s.DependsOn {
					if !slices.Contains(seen, d) {
						t.Fatalf("Resolve(%q): %q comes before its dependency %q", name, s.Workflow, d)
					}
				}
				for _, d := range s.DependsOnTags {
					if d.Workflow == "" || d.Tag == "" || !TagPattern.MatchString(d.Tag) || slices.Contains(s.DependsOn, d.Workflow) {
						t.Fatalf("Resolve(%q): %q has a bad tagged dependency %+v (in-run: %v)", name, s.Workflow, d, s.DependsOn)
					}
				}
				for _, c := range s.Checkpoints {
					if clean, err := CheckCheckpointPath(c); err != nil || clean != c {
						t.Fatalf("Resolve(%q): %q has a bad checkpoint path %q: %v", name, s.Workflow, c, err)
					}
				}
				if len(s.Checkpoints) > 0 {
					if d := time.Duration(s.CheckpointInterval); d < MinCheckpointInterval || d > MaxCheckpointInterval {
						t.Fatalf("Resolve(%q): %q has checkpoint interval %s", name, s.Workflow, d)
					}
				}
				seen = append(seen, s.Workflow)
			}
			vars, err := file.Variables(name)
			if err != nil {
				t.Fatalf("Variables(%q): %v", name, err)
			}
			overrides := map[string]string{}
			for k := range vars {
				overrides[k] = "1"
			}
			if _, err := file.Resolve(name, overrides); err != nil {
				t.Fatalf("Resolve(%q, %v): %v", name, overrides, err)
			}
		}
	})
}
