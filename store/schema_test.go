package store_test

// The SQLite and PostgreSQL migrations must stay in step: the same numbers
// with the same meaning, so that the one SQL of store/internal/sqlcore runs
// on both. TestSchemasMatch applies every migration to each database, reads
// back the schema each produced and compares them.
//
// The databases describe the same schema in their own words; these are the
// differences the comparison takes away, and nothing else:
//
//   - Types: SQLite keeps the declared type as written, PostgreSQL reports
//     its own name. Both become the upper-case SQL name (pgTypes maps
//     PostgreSQL's; sqliteTypes maps SQLite's synonyms), so BIGINT and
//     INTEGER stay apart: INTEGER is 32 bits in PostgreSQL.
//   - Nullability: a primary key column is NOT NULL in PostgreSQL whatever
//     its declaration; SQLite lets it be NULL unless declared NOT NULL. Both
//     count primary key columns as NOT NULL.
//   - Defaults: PostgreSQL adds casts ('x'::text) and writes booleans in
//     lower case. Casts and enclosing parentheses are dropped, keywords
//     compared in lower case, and a BOOLEAN default of 0 or 1 is false or
//     true. A default from a sequence (nextval) has no SQLite counterpart
//     and is not compared.
//   - Indexes: a UNIQUE constraint's index is named by each database its own
//     way, so indexes are compared by their columns, uniqueness and whether
//     they are partial, not by name. Primary keys are compared as such.
//   - Foreign keys: SQLite leaves the referenced columns out when they are
//     the referenced table's primary key; they are filled in from it. The
//     ON DELETE action is compared by name.
//
// What the dialects do differently on purpose is listed in intended, each
// with its reason; any other difference fails the test.

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/store/storetest"
)

// schema is what the comparison sees of a database: its tables by name.
type schema map[string]*table

type table struct {
	columns     map[string]column
	primaryKey  []string
	indexes     []string // "unique (a, b)", "index (a) partial", sorted
	foreignKeys []string // "(a) references t (b) on delete cascade", sorted
}

type column struct {
	typ     string
	notNull bool
	dflt    string
	seqDflt bool // a default from a sequence: not compared
}

// pgTypes maps PostgreSQL's data_type to the SQL name the migrations use.
var pgTypes = map[string]string{
	"bigint":           "BIGINT",
	"integer":          "INTEGER",
	"smallint":         "SMALLINT",
	"text":             "TEXT",
	"boolean":          "BOOLEAN",
	"double precision": "DOUBLE PRECISION",
	"real":             "REAL",
	"bytea":            "BLOB",
}

// intended are the differences the dialects mean to have, by the line
// compare reports, with why.
var intended = map[string]string{
	"table jobs: index unique (queue_seq) only in SQLite": "SQLite's next queue_seq is MAX(queue_seq) + 1 (Dialect.NextQueueSeq), " +
		"which this index serves and keeps unique; PostgreSQL takes it from the sequence jobs_queue_seq",
	"table jobs: foreign key (runner_id) references runners (id) on delete no action only in SQLite": "PostgreSQL checked it for every job a claim assigns, " +
		"a quarter of the claim's UPDATE, to guard what the claim lock guards (migration 029); SQLite cannot drop it without rebuilding the table",
}

// sqliteTypes maps SQLite's synonyms to the SQL name the migrations use.
var sqliteTypes = map[string]string{
	"INT":   "INTEGER",
	"BOOL":  "BOOLEAN",
	"BYTEA": "BLOB",
}

// TestSchemasMatch: every migration applied to SQLite and to PostgreSQL
// gives the same tables, columns, indexes and foreign keys.
func TestSchemasMatch(t *testing.T) {
	t.Parallel()
	lite := sqliteSchema(t, nil)
	pg := postgresSchema(t, nil)
	var diff []string
	for _, d := range compare(lite, pg) {
		if _, ok := intended[d]; !ok {
			diff = append(diff, d)
		}
	}
	if len(diff) > 0 {
		t.Errorf("the SQLite and PostgreSQL migrations give different schemas; make them agree (in a new migration of one number in both):\n%s",
			strings.Join(diff, "\n"))
	}
	if len(lite) < 5 {
		t.Errorf("SQLite schema has %d tables, want the store's", len(lite))
	}
}

// TestSchemaComparisonFindsDrift: a column added, retyped or indexed on one
// side only is reported, naming the table and column.
func TestSchemaComparisonFindsDrift(t *testing.T) {
	t.Parallel()
	extra := func(dir, sql string) fs.FS {
		m := fstest.MapFS{}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m[e.Name()] = &fstest.MapFile{Data: b}
		}
		m["999_drift.up.sql"] = &fstest.MapFile{Data: []byte(sql)}
		return m
	}
	lite := sqliteSchema(t, extra("sqlite/migrations",
		"ALTER TABLE users ADD COLUMN nickname TEXT NOT NULL DEFAULT 'x'; CREATE UNIQUE INDEX users_nick ON users (nickname);"))
	pg := postgresSchema(t, extra("postgres/migrations",
		"ALTER TABLE users ADD COLUMN nickname INTEGER; CREATE TABLE only_pg (id BIGINT PRIMARY KEY);"))
	got := strings.Join(compare(lite, pg), "\n")
	for _, want := range []string{
		"table users: column nickname: type TEXT in SQLite, INTEGER in PostgreSQL",
		"table users: column nickname: NOT NULL in SQLite, nullable in PostgreSQL",
		"table users: column nickname: default 'x' in SQLite, none in PostgreSQL",
		"table users: index unique (nickname) only in SQLite",
		"table only_pg: only in PostgreSQL",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("differences:\n%s\nwant a line %q", got, want)
		}
	}
}

// compare lists the differences between the schemas, one line each,
// naming the table and column.
func compare(lite, pg schema) []string {
	var diff []string
	add := func(format string, args ...any) { diff = append(diff, fmt.Sprintf(format, args...)) }
	for _, name := range sortedKeys(lite, pg) {
		l, p := lite[name], pg[name]
		switch {
		case p == nil:
			add("table %s: only in SQLite", name)
			continue
		case l == nil:
			add("table %s: only in PostgreSQL", name)
			continue
		}
		for _, cn := range sortedKeys(l.columns, p.columns) {
			lc, lok := l.columns[cn]
			pc, pok := p.columns[cn]
			switch {
			case !pok:
				add("table %s: column %s: only in SQLite", name, cn)
				continue
			case !lok:
				add("table %s: column %s: only in PostgreSQL", name, cn)
				continue
			}
			if lc.typ != pc.typ {
				add("table %s: column %s: type %s in SQLite, %s in PostgreSQL", name, cn, lc.typ, pc.typ)
			}
			if lc.notNull != pc.notNull {
				add("table %s: column %s: %s in SQLite, %s in PostgreSQL", name, cn, nullability(lc.notNull), nullability(pc.notNull))
			}
			if !lc.seqDflt && !pc.seqDflt && lc.dflt != pc.dflt {
				add("table %s: column %s: default %s in SQLite, %s in PostgreSQL", name, cn, orNone(lc.dflt), orNone(pc.dflt))
			}
		}
		if !slices.Equal(l.primaryKey, p.primaryKey) {
			add("table %s: primary key (%s) in SQLite, (%s) in PostgreSQL", name, strings.Join(l.primaryKey, ", "), strings.Join(p.primaryKey, ", "))
		}
		for _, d := range setDiff(l.indexes, p.indexes) {
			add("table %s: index %s only in SQLite", name, d)
		}
		for _, d := range setDiff(p.indexes, l.indexes) {
			add("table %s: index %s only in PostgreSQL", name, d)
		}
		for _, d := range setDiff(l.foreignKeys, p.foreignKeys) {
			add("table %s: foreign key %s only in SQLite", name, d)
		}
		for _, d := range setDiff(p.foreignKeys, l.foreignKeys) {
			add("table %s: foreign key %s only in PostgreSQL", name, d)
		}
	}
	return diff
}

func nullability(notNull bool) string {
	if notNull {
		return "NOT NULL"
	}
	return "nullable"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// setDiff is what of a is not in b.
func setDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func sortedKeys[V any](a, b map[string]V) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

var (
	pgCast   = regexp.MustCompile(`::[a-z ]+(\[\])?$`)
	keywords = map[string]bool{"true": true, "false": true, "null": true, "current_timestamp": true}
)

// normDefault is a column's default as both databases are compared on.
func normDefault(d, typ string) string {
	d = strings.TrimSpace(d)
	for {
		n := strings.TrimSpace(pgCast.ReplaceAllString(d, ""))
		if strings.HasPrefix(n, "(") && strings.HasSuffix(n, ")") {
			n = strings.TrimSpace(n[1 : len(n)-1])
		}
		if n == d {
			break
		}
		d = n
	}
	if keywords[strings.ToLower(d)] {
		d = strings.ToLower(d)
	}
	if typ == "BOOLEAN" {
		switch d {
		case "0":
			d = "false"
		case "1":
			d = "true"
		}
	}
	return d
}

// fkDesc describes a foreign key.
func fkDesc(from []string, ref string, to []string, onDelete string) string {
	return fmt.Sprintf("(%s) references %s (%s) on delete %s", strings.Join(from, ", "), ref, strings.Join(to, ", "), strings.ToLower(onDelete))
}

// indexDesc describes an index.
func indexDesc(unique bool, cols []string, partial bool) string {
	s := "index"
	if unique {
		s = "unique"
	}
	s += " (" + strings.Join(cols, ", ") + ")"
	if partial {
		s += " partial"
	}
	return s
}

// sqliteSchema migrates a new SQLite database with migrations (nil: the
// embedded ones) and reads its schema.
func sqliteSchema(t *testing.T, migrations fs.FS) schema {
	t.Helper()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "dstack.db")
	var opts []sqlite.Option
	if migrations != nil {
		opts = append(opts, sqlite.WithMigrations(migrations))
	}
	s, err := sqlite.Open(ctx, path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("SQLite: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	strs := func(query string, args ...any) [][]string {
		t.Helper()
		rows, err := db.QueryContext(ctx, query, args...)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		var out [][]string
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := make([]string, len(cols))
			for i, v := range vals {
				row[i] = v.String
			}
			out = append(out, row)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	sch := schema{}
	for _, r := range strs(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`) {
		name := r[0]
		tb := &table{columns: map[string]column{}}
		pk := map[int]string{}
		for _, c := range strs(`SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)`, name) {
			typ := strings.ToUpper(strings.TrimSpace(c[1]))
			if m, ok := sqliteTypes[typ]; ok {
				typ = m
			}
			inPK := c[4] != "0"
			tb.columns[c[0]] = column{typ: typ, notNull: c[2] == "1" || inPK, dflt: normDefault(c[3], typ)}
			if inPK {
				var n int
				if _, err := fmt.Sscan(c[4], &n); err != nil {
					t.Fatalf("table %s: primary key position %q: %v", name, c[4], err)
				}
				pk[n] = c[0]
			}
		}
		for i := 1; i <= len(pk); i++ {
			tb.primaryKey = append(tb.primaryKey, pk[i])
		}
		for _, ix := range strs(`SELECT name, "unique", origin, partial FROM pragma_index_list(?)`, name) {
			if ix[2] == "pk" {
				continue
			}
			var cols []string
			for _, c := range strs(`SELECT COALESCE(name, '(expression)') FROM pragma_index_info(?) ORDER BY seqno`, ix[0]) {
				cols = append(cols, c[0])
			}
			tb.indexes = append(tb.indexes, indexDesc(ix[1] == "1", cols, ix[3] == "1"))
		}
		sort.Strings(tb.indexes)
		type fk struct {
			ref, onDelete string
			from, to      []string
		}
		fks := map[string]*fk{}
		for _, f := range strs(`SELECT id, "table", "from", "to", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq`, name) {
			k := fks[f[0]]
			if k == nil {
				k = &fk{ref: f[1], onDelete: f[4]}
				fks[f[0]] = k
			}
			k.from = append(k.from, f[2])
			if f[3] != "" {
				k.to = append(k.to, f[3])
			}
		}
		for _, k := range fks {
			if len(k.to) == 0 {
				// The referenced table's primary key.
				pk := map[int]string{}
				for _, c := range strs(`SELECT name, pk FROM pragma_table_info(?) WHERE pk > 0`, k.ref) {
					var n int
					if _, err := fmt.Sscan(c[1], &n); err != nil {
						t.Fatalf("table %s: primary key position %q: %v", k.ref, c[1], err)
					}
					pk[n] = c[0]
				}
				for i := 1; i <= len(pk); i++ {
					k.to = append(k.to, pk[i])
				}
			}
			tb.foreignKeys = append(tb.foreignKeys, fkDesc(k.from, k.ref, k.to, k.onDelete))
		}
		sort.Strings(tb.foreignKeys)
		sch[name] = tb
	}
	return sch
}

// pgDeleteActions names pg_constraint.confdeltype as SQLite does.
var pgDeleteActions = map[string]string{"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

// postgresSchema migrates a new PostgreSQL schema with migrations (nil: the
// embedded ones) and reads it.
func postgresSchema(t *testing.T, migrations fs.FS) schema {
	t.Helper()
	ctx := t.Context()
	dsn := storetest.PostgresDSN(t)
	var opts []postgres.Option
	if migrations != nil {
		opts = append(opts, postgres.WithMigrations(migrations))
	}
	s, err := postgres.Open(ctx, dsn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // a test's connection; nothing to do about a failed close
	collect := func(query string, args []any, scan func(pgx.Rows) error) {
		t.Helper()
		rows, err := conn.Query(ctx, query, args...)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
	sch := schema{}
	var names []string
	collect(`SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`, nil,
		func(r pgx.Rows) error {
			var n string
			err := r.Scan(&n)
			names = append(names, n)
			return err
		})
	for _, name := range names {
		tb := &table{columns: map[string]column{}}
		collect(`SELECT column_name::text, data_type::text, is_nullable::text, COALESCE(column_default::text, '')
			FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`, []any{name},
			func(r pgx.Rows) error {
				var cn, dt, nullable, dflt string
				if err := r.Scan(&cn, &dt, &nullable, &dflt); err != nil {
					return err
				}
				typ, ok := pgTypes[dt]
				if !ok {
					typ = "unmapped PostgreSQL type " + dt
				}
				tb.columns[cn] = column{typ: typ, notNull: nullable == "NO", dflt: normDefault(dflt, typ),
					seqDflt: strings.HasPrefix(dflt, "nextval(")}
				return nil
			})
		const keyCols = `ARRAY(SELECT a.attname::text FROM unnest(%s) WITH ORDINALITY k(n, o)
			JOIN pg_attribute a ON a.attrelid = %s AND a.attnum = k.n ORDER BY k.o)`
		collect(`SELECT ix.indisprimary, ix.indisunique, ix.indpred IS NOT NULL, `+fmt.Sprintf(keyCols, "ix.indkey", "ix.indrelid")+`, ix.indexprs IS NOT NULL
			FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid
			WHERE t.relname = $1 AND t.relnamespace = current_schema()::regnamespace`, []any{name},
			func(r pgx.Rows) error {
				var primary, unique, partial, expr bool
				var cols []string
				if err := r.Scan(&primary, &unique, &partial, &cols, &expr); err != nil {
					return err
				}
				if expr {
					cols = append(cols, "(expression)")
				}
				if primary {
					tb.primaryKey = cols
					return nil
				}
				tb.indexes = append(tb.indexes, indexDesc(unique, cols, partial))
				return nil
			})
		sort.Strings(tb.indexes)
		collect(`SELECT `+fmt.Sprintf(keyCols, "c.conkey", "c.conrelid")+`, rt.relname::text, `+fmt.Sprintf(keyCols, "c.confkey", "c.confrelid")+`, c.confdeltype::text
			FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class rt ON rt.oid = c.confrelid
			WHERE c.contype = 'f' AND t.relname = $1 AND t.relnamespace = current_schema()::regnamespace`, []any{name},
			func(r pgx.Rows) error {
				var from, to []string
				var ref, del string
				if err := r.Scan(&from, &ref, &to, &del); err != nil {
					return err
				}
				tb.foreignKeys = append(tb.foreignKeys, fkDesc(from, ref, to, pgDeleteActions[del]))
				return nil
			})
		sort.Strings(tb.foreignKeys)
		sch[name] = tb
	}
	return sch
}
