// Package userconfig reads and writes the CLI's configuration file,
// ~/.dstack/config.yaml, which names the dstack server to talk to and the
// token to talk to it with:
//
//	server: http://127.0.0.1:3000
//	token: 3f2a…
//
// The CLI reads it (environment variables DSTACK_SERVER and DSTACK_TOKEN win
// over it) and `dstack config` writes it; `dstack server` writes it on its
// first start when no server is configured yet, so that `dstack` works at
// once. DSTACK_CONFIG names another file (see PathFromEnv).
//
// The file holds a credential: it is written with mode 0600 in a directory
// of mode 0700, atomically, so a crash never leaves half a file.
package userconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// Config is the content of the file. Empty fields are not set.
type Config struct {
	// Server is the server's base URL, such as http://127.0.0.1:3000.
	Server string `yaml:"server,omitempty" json:"server,omitempty"`
	// Token is the user's API token.
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
}

// IsZero reports whether nothing is configured.
func (c *Config) IsZero() bool { return c == nil || (c.Server == "" && c.Token == "") }

// EnvVar names another config file than the default one.
const EnvVar = "DSTACK_CONFIG"

// PathFromEnv is the file that EnvVar names, read with getenv (os.Getenv
// when nil), else DefaultPath. The CLI and `dstack server` both find the
// file this way.
func PathFromEnv(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if p := getenv(EnvVar); p != "" {
		return p, nil
	}
	return DefaultPath()
}

// DefaultPath is ~/.dstack/config.yaml.
func DefaultPath() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the home directory for the dstack config file: %w (set HOME, or DSTACK_CONFIG to the file's path)", err)
	}
	return filepath.Join(home, ".dstack", "config.yaml"), nil
}

// Load reads the file at path. A missing file is an empty config, not an
// error; a malformed one is an error that names the file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read dstack config: %w", err)
	}
	var c Config
	if len(bytes.TrimSpace(b)) == 0 {
		return &c, nil
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s is not a valid dstack config (%v): fix it, or delete it and run `dstack config --server URL --token TOKEN`", path, err) //nolint:errorlint // explained here, not passed on
	}
	return &c, nil
}

// Save writes c to path: the directory is created with mode 0700 when
// missing, the file gets mode 0600, and it is replaced atomically (written
// to a temporary file in the same directory, synced, then renamed).
func Save(path string, c *Config) error {
	if c == nil {
		c = &Config{}
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode dstack config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(name)
		}
	}()
	// CreateTemp makes the file 0600 already; Chmod keeps that true under
	// any umask and documents the intent.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("save dstack config: %w", err)
	}
	ok = true
	return nil
}
