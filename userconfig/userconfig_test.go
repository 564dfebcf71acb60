package userconfig_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/dstackai/dstack/userconfig"
)

func TestLoadMissingIsEmpty(t *testing.T) {
	t.Parallel()
	c, err := userconfig.Load(filepath.Join(t.TempDir(), "nope", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsZero() {
		t.Fatalf("got %+v, want empty", c)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), ".dstack")
	path := filepath.Join(dir, "config.yaml")
	want := &userconfig.Config{Server: "http://127.0.0.1:3000", Token: "secret"}
	if err := userconfig.Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := userconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
		}
		di, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm() != 0o700 {
			t.Errorf("dir mode %v, want 0700", di.Mode().Perm())
		}
	}
	// Overwrite, and check no temporary file is left behind.
	if err := userconfig.Save(path, &userconfig.Config{Server: "https://dstack.example.com"}); err != nil {
		t.Fatal(err)
	}
	got, err = userconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Server != "https://dstack.example.com" || got.Token != "" {
		t.Fatalf("after overwrite got %+v", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only config.yaml", names)
	}
}

func TestLoadMalformedNamesFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("server: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := userconfig.Load(path)
	if err == nil {
		t.Fatal("want an error")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "dstack config") {
		t.Fatalf("error %q should name the file and say how to fix it", err)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := userconfig.Load(path)
	if err != nil || !c.IsZero() {
		t.Fatalf("got %+v, %v", c, err)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Parallel()
	p, err := userconfig.DefaultPath()
	if err != nil {
		t.Skip("no home directory:", err)
	}
	if filepath.Base(p) != "config.yaml" || filepath.Base(filepath.Dir(p)) != ".dstack" {
		t.Fatalf("DefaultPath = %q", p)
	}
}

func TestPathFromEnv(t *testing.T) {
	t.Parallel()
	p, err := userconfig.PathFromEnv(func(k string) string {
		if k == userconfig.EnvVar {
			return "/tmp/x.yaml"
		}
		return ""
	})
	if err != nil || p != "/tmp/x.yaml" {
		t.Fatalf("got %q, %v", p, err)
	}
	def, derr := userconfig.DefaultPath()
	p, err = userconfig.PathFromEnv(func(string) string { return "" })
	if p != def || (err == nil) != (derr == nil) {
		t.Fatalf("got %q, %v; want %q, %v", p, err, def, derr)
	}
}
