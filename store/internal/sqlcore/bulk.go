package sqlcore

import (
	"context"
	"fmt"
	"strings"
)

// bulkCol is a column of the rows a bulk statement reads: its name, which
// the statement refers to as v.<name>, and its PostgreSQL type.
type bulkCol struct {
	name, pgType string
}

// bulk is a statement over a set of rows given as arguments, such as an
// UPDATE of many jobs, each with values of its own. Its text reads the rows
// as a table v with the columns cols, where it says "FROM v":
//
//	UPDATE users SET claim_seq = v.seq FROM v WHERE users.id = v.id
//
// On a database that unnests arrays (Dialect.Unnest, PostgreSQL), the
// statement runs once, over one array argument a column: the database then
// plans and starts it once, not once a row, which is what makes a batch of
// status changes cheap there. Elsewhere it runs once a row, over a one-row
// table of arguments, which costs nothing more where statements are calls
// within the process (SQLite).
type bulk struct {
	cols []bulkCol
	// set is the statement over every row at once; row the statement over
	// one row.
	set, row string
}

// newBulk prepares query, whose rows have the columns cols.
func newBulk(query string, cols ...bulkCol) bulk {
	const from = "FROM v"
	if strings.Count(query, from) != 1 {
		panic(fmt.Sprintf("bulk statement must read its rows once, with %q: %s", from, query))
	}
	unnest := make([]string, len(cols))
	names := make([]string, len(cols))
	one := make([]string, len(cols))
	for i, c := range cols {
		unnest[i] = fmt.Sprintf("$%d::%s[]", i+1, c.pgType)
		names[i] = c.name
		one[i] = fmt.Sprintf("$%d AS %s", i+1, c.name)
	}
	return bulk{
		cols: cols,
		set:  strings.Replace(query, from, "FROM unnest("+strings.Join(unnest, ", ")+") AS v("+strings.Join(names, ", ")+")", 1),
		row:  strings.Replace(query, from, "FROM (SELECT "+strings.Join(one, ", ")+") AS v", 1),
	}
}

// bulk runs b over the rows argSets (each the values of b's columns, in
// order) and gives fn the rows of each statement it ran (bulkStmts).
func (s *Store) bulk(ctx context.Context, q Querier, b bulk, argSets [][]any, fn func(rows Rows) error) error {
	return queryAll(ctx, q, s.bulkStmts(b, argSets), func(_ int, rows Rows) error { return fn(rows) })
}

// bulkStmts are the statements that run b over the rows argSets: one over
// them all where the database unnests arrays, one a row elsewhere.
func (s *Store) bulkStmts(b bulk, argSets [][]any) []Stmt {
	if len(argSets) == 0 {
		return nil
	}
	if s.d.Unnest {
		return []Stmt{{SQL: b.set, Args: b.arrays(argSets)}}
	}
	stmts := make([]Stmt, len(argSets))
	for i, args := range argSets {
		stmts[i] = Stmt{SQL: b.row, Args: args}
	}
	return stmts
}

// bulkDefer runs b over the rows argSets as bulk does, where no one reads
// its rows: in a transaction that sends statements with the next one
// (Deferrer), it goes out with it, and its error is that statement's.
func (s *Store) bulkDefer(ctx context.Context, q Querier, b bulk, argSets [][]any) error {
	d, ok := q.(Deferrer)
	if !ok || !s.d.Unnest || len(argSets) == 0 {
		return s.bulk(ctx, q, b, argSets, func(Rows) error { return nil })
	}
	d.Defer(b.set, b.arrays(argSets)...)
	return nil
}

// arrays are the array arguments of b.set for the rows argSets.
func (b bulk) arrays(argSets [][]any) []any {
	arrays := make([]any, len(b.cols))
	for i, c := range b.cols {
		arrays[i] = column(c.pgType, argSets, i)
	}
	return arrays
}

// column gathers the values of column i of the rows argSets into an array
// argument of the type pgType.
func column(pgType string, argSets [][]any, i int) any {
	switch pgType {
	case "text":
		out := make([]string, len(argSets))
		for k, args := range argSets {
			out[k] = args[i].(string)
		}
		return out
	case "bigint":
		// NULL elements are nil; the others are int64 or *int64.
		out := make([]*int64, len(argSets))
		for k, args := range argSets {
			switch v := args[i].(type) {
			case nil:
			case int64:
				out[k] = &v
			case *int64:
				out[k] = v
			default:
				panic(fmt.Sprintf("bulk: a bigint column's value is a %T", v))
			}
		}
		return out
	}
	panic("bulk: no arrays of " + pgType)
}
