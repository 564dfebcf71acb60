package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dstackai/dstack/store"
)

var settingTests = []test{
	{"first value stays", func(t *testing.T, open Open) {
		f := setup(t, open)
		v, err := f.s.SettingInit(f.ctx, settingParams("server_id", "a"))
		if err != nil || v != "a" {
			t.Fatalf("SettingInit = %q, %v; want a", v, err)
		}
		v, err = f.s.SettingInit(f.ctx, settingParams("server_id", "b"))
		if err != nil || v != "a" {
			t.Fatalf("second SettingInit = %q, %v; want the first value a", v, err)
		}
		v, err = f.s.SettingInit(f.ctx, settingParams("other", "c"))
		if err != nil || v != "c" {
			t.Fatalf("SettingInit(other) = %q, %v; want c", v, err)
		}
	}},
	{"concurrent callers agree", func(t *testing.T, open Open) {
		f := setup(t, open)
		const n = 8
		got := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := f.s.SettingInit(f.ctx, settingParams("server_id", fmt.Sprint("v", i)))
				if err != nil {
					t.Errorf("SettingInit: %v", err)
				}
				got[i] = v
			}()
		}
		wg.Wait()
		for _, v := range got {
			if v != got[0] {
				t.Fatalf("callers got different values: %q", got)
			}
		}
	}},
	{"empty value refused", func(t *testing.T, open Open) {
		f := setup(t, open)
		if _, err := f.s.SettingInit(f.ctx, settingParams("server_id", "")); err == nil {
			t.Fatal("SettingInit with an empty value succeeded")
		}
		if err := f.s.SettingPut(f.ctx, store.SettingPutParams{Name: "aws", Value: ""}); err == nil {
			t.Fatal("SettingPut with an empty value succeeded")
		}
		if _, err := f.s.SettingGet(f.ctx, "aws"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("SettingGet after a refused put: %v, want ErrNotFound", err)
		}
	}},
	{"get put delete", func(t *testing.T, open Open) {
		f := setup(t, open)
		_, err := f.s.SettingGet(f.ctx, "aws")
		wantErr(t, "SettingGet of an unset setting", err, store.ErrNotFound)
		wantErr(t, "SettingDelete of an unset setting", f.s.SettingDelete(f.ctx, "aws"), store.ErrNotFound)

		// A long value (a sealed credential) round-trips byte for byte.
		long := "v1." + strings.Repeat("AbC-_9", 400)
		for _, v := range []string{"first", long} {
			if err := f.s.SettingPut(f.ctx, store.SettingPutParams{Name: "aws", Value: v}); err != nil {
				t.Fatalf("SettingPut(%.10q): %v", v, err)
			}
			if got, err := f.s.SettingGet(f.ctx, "aws"); err != nil || got != v {
				t.Fatalf("SettingGet = %.20q, %v; want %.20q", got, err, v)
			}
		}
		// Other settings are left alone, and SettingInit sees what
		// SettingPut wrote.
		if v, err := f.s.SettingInit(f.ctx, settingParams("server_id", "id")); err != nil || v != "id" {
			t.Fatalf("SettingInit(server_id) = %q, %v", v, err)
		}
		if v, err := f.s.SettingInit(f.ctx, settingParams("aws", "other")); err != nil || v != long {
			t.Fatalf("SettingInit(aws) = %.20q, %v; want the value put", v, err)
		}
		if err := f.s.SettingDelete(f.ctx, "aws"); err != nil {
			t.Fatalf("SettingDelete: %v", err)
		}
		_, err = f.s.SettingGet(f.ctx, "aws")
		wantErr(t, "SettingGet after SettingDelete", err, store.ErrNotFound)
		wantErr(t, "SettingDelete twice", f.s.SettingDelete(f.ctx, "aws"), store.ErrNotFound)
		if v, err := f.s.SettingGet(f.ctx, "server_id"); err != nil || v != "id" {
			t.Fatalf("SettingGet(server_id) after deleting aws = %q, %v", v, err)
		}
	}},
	{"concurrent puts leave one value", func(t *testing.T, open Open) {
		f := setup(t, open)
		const n = 8
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.s.SettingPut(f.ctx, store.SettingPutParams{Name: "aws", Value: fmt.Sprint("v", i)}); err != nil {
					t.Errorf("SettingPut: %v", err)
				}
			}()
		}
		wg.Wait()
		v, err := f.s.SettingGet(f.ctx, "aws")
		if err != nil || !strings.HasPrefix(v, "v") {
			t.Fatalf("SettingGet after concurrent puts = %q, %v", v, err)
		}
	}},
}

func settingParams(name, value string) store.SettingInitParams {
	return store.SettingInitParams{Name: name, Value: value}
}
