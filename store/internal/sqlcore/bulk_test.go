package sqlcore

import (
	"slices"
	"testing"
)

func TestBulkStatements(t *testing.T) {
	b := newBulk(`UPDATE users SET claim_seq = v.seq FROM v WHERE users.id = v.id`,
		bulkCol{"id", "text"}, bulkCol{"seq", "bigint"})
	if want := `UPDATE users SET claim_seq = v.seq FROM unnest($1::text[], $2::bigint[]) AS v(id, seq) WHERE users.id = v.id`; b.set != want {
		t.Errorf("over arrays:\n%s\nwant\n%s", b.set, want)
	}
	if want := `UPDATE users SET claim_seq = v.seq FROM (SELECT $1 AS id, $2 AS seq) AS v WHERE users.id = v.id`; b.row != want {
		t.Errorf("over one row:\n%s\nwant\n%s", b.row, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("a statement that does not read its rows FROM v was taken")
		}
	}()
	newBulk(`UPDATE users SET claim_seq = $2 WHERE id = $1`, bulkCol{"id", "text"})
}

func TestBulkColumns(t *testing.T) {
	seven := int64(7)
	rows := [][]any{{"a", int64(1)}, {"b", nil}, {"c", &seven}}
	if got := column("text", rows, 0).([]string); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("text column = %v", got)
	}
	got := column("bigint", rows, 1).([]*int64)
	if len(got) != 3 || *got[0] != 1 || got[1] != nil || *got[2] != 7 {
		t.Errorf("bigint column = %v, want 1, NULL, 7", got)
	}
}
