// Package secretbox seals the server's secrets at rest (cloud credentials,
// the web UI's session cookies) with AES-256-GCM under one server key.
//
// The key comes from the environment variable DSTACK_SERVER_ENCRYPTION_KEY
// (32 bytes, base64) or, when that is unset, from the file
// <data-dir>/encryption.key, which the server writes with mode 0600 at its
// first start. Server replicas that share a database must share the key:
// give each the same DSTACK_SERVER_ENCRYPTION_KEY.
//
// A sealed value is text: "v1." followed by the base64 (URL alphabet, no
// padding) of a random 12-byte nonce and the ciphertext with its tag. The
// caller's associated data binds a value to its purpose (a value sealed for
// "aws-credentials" does not open as a session), so that one sealed value
// cannot be swapped for another.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvKey is the environment variable that holds the server key.
const EnvKey = "DSTACK_SERVER_ENCRYPTION_KEY"

// KeyFile is the key file's name in the server's data directory.
const KeyFile = "encryption.key"

// KeySize is the key's length in bytes.
const KeySize = 32

const version = "v1."

// ErrOpen says a sealed value could not be opened: it was sealed under
// another key or for another purpose, or it was altered.
var ErrOpen = errors.New("the value cannot be decrypted with this server's key " +
	"(sealed under another DSTACK_SERVER_ENCRYPTION_KEY, or altered)")

// Box seals and opens values under one key. It is safe for concurrent use.
type Box struct {
	aead  cipher.AEAD
	id    string
	check string
}

// New returns a Box for a KeySize-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption key: %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("dstack key id\x00"), key...))
	chk := sha256.Sum256(append([]byte("dstack key check\x00"), key...))
	return &Box{aead: aead, id: hex.EncodeToString(sum[:4]), check: hex.EncodeToString(chk[:16])}, nil
}

// Check is a value derived from the key by a one-way function, to tell
// whether two servers have the same key without either showing it: server
// replicas record it in their database and compare.
func (b *Box) Check() string { return b.check }

// ParseKey decodes a key as DSTACK_SERVER_ENCRYPTION_KEY holds it: base64
// (standard or URL alphabet, padded or not) of KeySize bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("%s decodes to %d bytes; it must be %d bytes in base64: make one with `head -c 32 /dev/urandom | base64`", EnvKey, len(k), KeySize)
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s is not base64; make a key with `head -c 32 /dev/urandom | base64`", EnvKey)
}

// Load returns the server's Box: under the key in DSTACK_SERVER_ENCRYPTION_KEY
// when getenv has it, else under the key in dataDir/encryption.key, which
// is created (mode 0600) when missing. source says which, for the log.
func Load(dataDir string, getenv func(string) string) (b *Box, source string, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if v := getenv(EnvKey); v != "" {
		key, err := ParseKey(v)
		if err != nil {
			return nil, "", err
		}
		b, err := New(key)
		return b, EnvKey, err
	}
	path := filepath.Join(dataDir, KeyFile)
	key, err := readOrCreateKey(path)
	if err != nil {
		return nil, "", err
	}
	b, err = New(key)
	return b, path, err
}

func readOrCreateKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, perr := ParseKey(string(data))
		if perr != nil {
			return nil, fmt.Errorf("encryption key file %s: %w", path, perr)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	// The key is written whole to a file of its own, then linked into
	// place, which fails when the file exists: no process ever reads a
	// part-written key, a crash leaves no empty key file, and when two
	// processes start at once one key wins and both use it.
	tmp, err := os.CreateTemp(dir, ".encryption.key-*")
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("encryption key file: %w", werr)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return readOrCreateKey(path)
		}
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	return key, nil
}

// ID is a short fingerprint of the key (not secret), for logs and for
// telling which key sealed what.
func (b *Box) ID() string { return b.id }

// Seal encrypts plaintext bound to purpose and returns the sealed text.
func (b *Box) Seal(plaintext []byte, purpose string) (string, error) {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := b.aead.Seal(nonce, nonce, plaintext, []byte(purpose))
	return version + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a value Seal made for the same purpose. Anything else,
// altered or sealed under another key, is ErrOpen.
func (b *Box) Open(sealed, purpose string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, version)
	if !ok {
		return nil, ErrOpen
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) < b.aead.NonceSize()+b.aead.Overhead() {
		return nil, ErrOpen
	}
	n := b.aead.NonceSize()
	plain, err := b.aead.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}
