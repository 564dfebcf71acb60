package storetest

import (
	"fmt"
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
	}},
}

func settingParams(name, value string) store.SettingInitParams {
	return store.SettingInitParams{Name: name, Value: value}
}
