package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

// The log semantics readers and writers rely on (append at an offset, read
// from one, follow) are the conformance suite of package logstore, which runs
// over this store too; these tests check what only the database does.
var logTests = []test{
	{"append at an offset is kept once", func(t *testing.T, open Open) {
		f := setup(t, open)
		for _, step := range []struct {
			offset, want, added int64
			data                string
			gap                 bool
		}{
			{0, 5, 5, "hello", false},
			{0, 5, 0, "hello", false},
			{3, 11, 6, "lo world", false},
			{11, 11, 0, "", false},
			{20, 11, 0, "x", true},
			{0, 11, 0, "", false},
		} {
			r, err := f.s.LogAppend(f.ctx, store.LogAppendParams{JobID: "j", Offset: step.offset, Data: []byte(step.data), At: f.tick()})
			size := r.Size
			if r.Added != step.added {
				t.Errorf("LogAppend(%d, %q) added %d bytes, want %d", step.offset, step.data, r.Added, step.added)
			}
			if step.gap != errors.Is(err, store.ErrLogGap) || (!step.gap && err != nil) {
				t.Fatalf("LogAppend(%d, %q) = %v; gap wanted: %v", step.offset, step.data, err, step.gap)
			}
			if size != step.want {
				t.Errorf("LogAppend(%d, %q) = size %d, want %d", step.offset, step.data, size, step.want)
			}
		}
		chunks, err := f.s.LogRead(f.ctx, store.LogReadParams{JobID: "j"})
		if err != nil {
			t.Fatal(err)
		}
		if len(chunks) != 2 || string(chunks[0].Data) != "hello" || string(chunks[1].Data) != " world" ||
			chunks[1].Offset != 5 || !chunks[0].At.Equal(base.Add(time.Second)) {
			t.Errorf("LogRead = %s, want \"hello\" at 0 written at the first tick, \" world\" at 5", dumpChunks(chunks))
		}
		if n, err := f.s.LogSize(f.ctx, "j"); err != nil || n != 11 {
			t.Errorf("LogSize = %d, %v; want 11", n, err)
		}
		if n, err := f.s.LogSize(f.ctx, "none"); err != nil || n != 0 {
			t.Errorf("LogSize of a job without a log = %d, %v; want 0", n, err)
		}
	}},
	{"a large append is split and read in windows", func(t *testing.T, open Open) {
		f := setup(t, open)
		data := bytes.Repeat([]byte("0123456789abcdef"), (2*store.MaxLogChunk+100)/16)
		if r, err := f.s.LogAppend(f.ctx, store.LogAppendParams{JobID: "j", Data: data, At: f.tick()}); err != nil || r.Size != int64(len(data)) {
			t.Fatalf("LogAppend of %d bytes = %+v, %v", len(data), r, err)
		}
		all, err := f.s.LogRead(f.ctx, store.LogReadParams{JobID: "j"})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 3 {
			t.Errorf("%d bytes are %d chunks, want 3 of at most %d", len(data), len(all), store.MaxLogChunk)
		}
		var got []byte
		for _, c := range all {
			got = append(got, c.Data...)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("read %d bytes, want the %d appended", len(got), len(data))
		}
		// A window from inside the first chunk stops at the chunk that
		// reaches past it.
		w, err := f.s.LogRead(f.ctx, store.LogReadParams{JobID: "j", Offset: 10, MaxBytes: 100})
		if err != nil || len(w) != 1 || w[0].Offset != 0 {
			t.Errorf("LogRead(10, 100) = %s, %v; want the first chunk", dumpChunks(w), err)
		}
		w, err = f.s.LogRead(f.ctx, store.LogReadParams{JobID: "j", Offset: store.MaxLogChunk, MaxBytes: 1})
		if err != nil || len(w) != 1 || w[0].Offset != store.MaxLogChunk {
			t.Errorf("LogRead at the second chunk = %s, %v; want the second chunk", dumpChunks(w), err)
		}
		if w, err := f.s.LogRead(f.ctx, store.LogReadParams{JobID: "j", Offset: int64(len(data))}); err != nil || len(w) != 0 {
			t.Errorf("LogRead at the end = %s, %v; want nothing", dumpChunks(w), err)
		}
	}},
	{"concurrent writers keep the log contiguous", func(t *testing.T, open Open) {
		f := setup(t, open)
		// Writers resend overlapping ranges of one output, as a runner does
		// that fails over between replicas, each from where it last heard.
		var want bytes.Buffer
		for i := range 200 {
			fmt.Fprintf(&want, "line %03d\n", i)
		}
		out := want.Bytes()
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var off int64
				step := 7 + 13*w
				for off < int64(len(out)) {
					end := min(off+int64(step), int64(len(out)))
					r, err := f.s.LogAppend(f.ctx, store.LogAppendParams{JobID: "j", Offset: off, Data: out[off:end], At: base})
					if err != nil && !errors.Is(err, store.ErrLogGap) {
						t.Errorf("writer %d: LogAppend: %v", w, err)
						return
					}
					off = r.Size
				}
			}()
		}
		wg.Wait()
		chunks, err := f.s.LogRead(f.ctx, store.LogReadParams{JobID: "j"})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		var next int64
		for _, c := range chunks {
			if c.Offset != next {
				t.Fatalf("chunk at %d follows the end %d: the log has a hole or an overlap", c.Offset, next)
			}
			next = c.End()
			got = append(got, c.Data...)
		}
		if !bytes.Equal(got, out) {
			t.Errorf("log = %d bytes, want the %d written, each once", len(got), len(out))
		}
	}},
	{"delete", func(t *testing.T, open Open) {
		f := setup(t, open)
		for _, j := range []string{"a", "b"} {
			if _, err := f.s.LogAppend(f.ctx, store.LogAppendParams{JobID: j, Data: []byte("output of " + j), At: base}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.s.LogAppend(f.ctx, store.LogAppendParams{JobID: "a", Offset: 11, Data: []byte("!"), At: base}); err != nil {
			t.Fatal(err)
		}
		if n, err := f.s.LogDelete(f.ctx, "a"); err != nil || n != 12 {
			t.Errorf("LogDelete = %d, %v; want the 12 bytes it held", n, err)
		}
		if n, err := f.s.LogSize(f.ctx, "a"); err != nil || n != 0 {
			t.Errorf("LogSize after LogDelete = %d, %v; want 0", n, err)
		}
		if n, err := f.s.LogSize(f.ctx, "b"); err != nil || n != 11 {
			t.Errorf("another job's log: LogSize = %d, %v; want 11", n, err)
		}
		if n, err := f.s.LogDelete(f.ctx, "a"); err != nil || n != 0 {
			t.Errorf("LogDelete again = %d, %v; want 0, nil", n, err)
		}
	}},
}

func dumpChunks(cs []*store.LogChunk) string {
	var b bytes.Buffer
	b.WriteString("[")
	for i, c := range cs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d:%d", c.Offset, len(c.Data))
	}
	b.WriteString("]")
	return b.String()
}
