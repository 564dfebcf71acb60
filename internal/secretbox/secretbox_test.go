package secretbox_test

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dstackai/dstack/internal/secretbox"
)

func TestSealOpen(t *testing.T) {
	b, _, err := secretbox.Load(t.TempDir(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	secret := "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	sealed, err := b.Seal([]byte(secret), "aws-credentials")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, secret) || !strings.HasPrefix(sealed, "v1.") {
		t.Fatalf("sealed = %q", sealed)
	}
	again, _ := b.Seal([]byte(secret), "aws-credentials")
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	got, err := b.Open(sealed, "aws-credentials")
	if err != nil || string(got) != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := b.Open(sealed, "session"); !errors.Is(err, secretbox.ErrOpen) {
		t.Fatalf("opened for another purpose: %v", err)
	}
	tampered := sealed[:len(sealed)-2] + "AA"
	if _, err := b.Open(tampered, "aws-credentials"); !errors.Is(err, secretbox.ErrOpen) {
		t.Fatalf("opened an altered value: %v", err)
	}
	other, _ := secretbox.New(make([]byte, secretbox.KeySize))
	if _, err := other.Open(sealed, "aws-credentials"); !errors.Is(err, secretbox.ErrOpen) {
		t.Fatalf("opened under another key: %v", err)
	}
	for _, junk := range []string{"", "v1.", "v1.!!!", "v2.abc", sealed[:10]} {
		if _, err := b.Open(junk, "aws-credentials"); !errors.Is(err, secretbox.ErrOpen) {
			t.Errorf("Open(%q) = %v", junk, err)
		}
	}
}

func TestLoadKeyFileIsStableAndPrivate(t *testing.T) {
	dir := t.TempDir()
	noEnv := func(string) string { return "" }
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Go(func() {
			b, src, err := secretbox.Load(dir, noEnv)
			if err != nil {
				t.Error(err)
				return
			}
			if src != filepath.Join(dir, secretbox.KeyFile) {
				t.Errorf("source = %q", src)
			}
			ids[i] = b.ID()
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("concurrent first starts made different keys: %v", ids)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, secretbox.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestLoadFromEnvironment(t *testing.T) {
	key := make([]byte, secretbox.KeySize)
	key[0] = 7
	env := map[string]string{secretbox.EnvKey: base64.StdEncoding.EncodeToString(key)}
	dir := t.TempDir()
	b, src, err := secretbox.Load(dir, func(k string) string { return env[k] })
	if err != nil || src != secretbox.EnvKey {
		t.Fatalf("Load = %v, %q", err, src)
	}
	if _, err := os.Stat(filepath.Join(dir, secretbox.KeyFile)); !os.IsNotExist(err) {
		t.Fatal("a key file was written although the environment gave the key")
	}
	same, _ := secretbox.New(key)
	sealed, _ := b.Seal([]byte("x"), "p")
	if got, err := same.Open(sealed, "p"); err != nil || string(got) != "x" {
		t.Fatalf("the environment's key was not the one used: %v", err)
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		env[secretbox.EnvKey] = bad
		_, _, err := secretbox.Load(dir, func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), secretbox.EnvKey) || !strings.Contains(err.Error(), "/dev/urandom") {
			t.Errorf("bad key %q: %v", bad, err)
		}
	}
}
