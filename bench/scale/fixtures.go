package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// tinyCode is the code archive of the drained jobs: one small file.
func tinyCode() []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	body := "hello\n"
	_ = tw.WriteHeader(&tar.Header{Name: "README", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte(body))
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

func randInt63n(n int64) int64 { return rand.Int64N(n) }

// freshDatabase creates an empty database beside the one dsn names, and
// returns its URL and how to drop it.
func freshDatabase(ctx context.Context, dsn string, n int) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil || !strings.HasPrefix(u.Scheme, "postgres") {
		return "", nil, fmt.Errorf("-db %q is not a postgres:// URL", dsn)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("dstack_scale_%d_%d", os.Getpid(), n)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		return "", nil, fmt.Errorf("create database %s (the -db user needs CREATEDB): %w", name, err)
	}
	fresh := *u
	fresh.Path = "/" + name
	return fresh.String(), func() {
		_, _ = db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		db.Close()
	}, nil
}
