package flaghelp

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	root := &cobra.Command{Use: "tool"}
	sub := &cobra.Command{Use: "sub", Run: func(*cobra.Command, []string) {}}
	root.AddCommand(sub)
	sub.Flags().String("token", "", "your token (printed by `tool server`)")
	sub.Flags().Bool("list", false, "list them (as `tool list`)")
	sub.Flags().String("size", "", "the most to upload, as `SIZE` (256MiB)")
	sub.Flags().String("plain", "", "no quotes at all")
	root.PersistentFlags().String("dir", "", "the `dir ectory`")
	got := strings.Join(Check(root), "\n")
	for _, want := range []string{"tool sub --token", "tool sub --list", "tool --dir"} {
		if !strings.Contains(got, want) {
			t.Errorf("Check missed %s:\n%s", want, got)
		}
	}
	for _, ok := range []string{"--size", "--plain"} {
		if strings.Contains(got, ok) {
			t.Errorf("Check reported %s:\n%s", ok, got)
		}
	}
}
