package workflow

import (
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestCheckpoints(t *testing.T) {
	t.Parallel()
	const head = "workflows:\n  - name: train\n    provider: bash\n    commands: [ls]\n"
	tests := []struct {
		name, yaml string
		want       api.JobSpec // only the checkpoint fields
		err        string
	}{
		{name: "none", yaml: head},
		{name: "default interval", yaml: head + "    checkpoints: [ckpt]\n",
			want: api.JobSpec{Checkpoints: []string{"ckpt"}, CheckpointInterval: api.Duration(5 * time.Minute)}},
		{name: "all keys, cleaned, deduplicated", yaml: head + "    checkpoints: [./ckpt/, ckpt, out/state.pt]\n    checkpoint-interval: 30s\n    keep-checkpoints: true\n",
			want: api.JobSpec{Checkpoints: []string{"ckpt", "out/state.pt"}, CheckpointInterval: api.Duration(30 * time.Second), KeepCheckpoints: true}},
		{name: "a single path", yaml: head + "    checkpoints: ckpt\n",
			want: api.JobSpec{Checkpoints: []string{"ckpt"}, CheckpointInterval: api.Duration(5 * time.Minute)}},
		{name: "outside", yaml: head + "    checkpoints: [../ckpt]\n", err: `fuzz.yaml:5: workflow "train": checkpoints: "../ckpt" is outside the working directory`},
		{name: "absolute", yaml: head + "    checkpoints: [/tmp/ckpt]\n", err: `"/tmp/ckpt" is outside the working directory`},
		{name: "whole directory", yaml: head + "    checkpoints: [.]\n", err: `"." is the whole working directory`},
		{name: "backslash", yaml: head + "    checkpoints: ['a\\b']\n", err: `has a backslash`},
		{name: "empty", yaml: head + "    checkpoints: ['']\n", err: `must not be empty`},
		{name: "mapping", yaml: head + "    checkpoints: {a: b}\n", err: `checkpoints: expected`},
		{name: "bad interval", yaml: head + "    checkpoints: [c]\n    checkpoint-interval: often\n", err: `"often" is not a duration; give one such as 5m`},
		{name: "bare number", yaml: head + "    checkpoints: [c]\n    checkpoint-interval: 300\n", err: `"300" is not a duration`},
		{name: "interval too short", yaml: head + "    checkpoints: [c]\n    checkpoint-interval: 10ms\n", err: `10ms is out of range; give a duration from 1s to 24h0m0s`},
		{name: "keep not bool", yaml: head + "    checkpoints: [c]\n    keep-checkpoints: yes please\n", err: `keep-checkpoints: expected true or false`},
		{name: "interval alone", yaml: head + "    checkpoint-interval: 1m\n", err: `checkpoint-interval: has no effect without checkpoints:`},
		{name: "keep alone", yaml: head + "    keep-checkpoints: true\n", err: `keep-checkpoints: has no effect without checkpoints:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := Parse("fuzz.yaml", []byte(tt.yaml))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			specs, err := f.Resolve("train", nil)
			if err != nil {
				t.Fatal(err)
			}
			got := specs[0]
			if strings.Join(got.Checkpoints, ",") != strings.Join(tt.want.Checkpoints, ",") ||
				got.CheckpointInterval != tt.want.CheckpointInterval || got.KeepCheckpoints != tt.want.KeepCheckpoints {
				t.Fatalf("got %v %v %v, want %v %v %v", got.Checkpoints, got.CheckpointInterval, got.KeepCheckpoints,
					tt.want.Checkpoints, tt.want.CheckpointInterval, tt.want.KeepCheckpoints)
			}
		})
	}
}
