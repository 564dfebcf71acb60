package backend

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// named is a backend that has a name and a tag to tell copies apart.
type named struct{ name, tag string }

func (n *named) Name() string                                    { return n.name }
func (n *named) Offers(context.Context, string) ([]Offer, error) { return nil, nil }
func (n *named) Launch(context.Context, LaunchRequest) ([]Instance, error) {
	return nil, nil
}
func (n *named) Terminate(context.Context, []string) error        { return nil }
func (n *named) List(context.Context, string) ([]Instance, error) { return nil, nil }

func TestSet(t *testing.T) {
	t.Parallel()
	local, aws := &named{"local", "1"}, &named{"aws", "1"}
	s := NewSet(local, aws)
	if got := s.Names(); !slices.Equal(got, []string{"local", "aws"}) || s.Len() != 2 {
		t.Fatalf("names = %v (len %d), want local, aws", got, s.Len())
	}
	if s.Get("aws") != aws || s.Get("gcp") != nil {
		t.Fatalf("Get: aws %v, gcp %v", s.Get("aws"), s.Get("gcp"))
	}
	v := s.Version()

	// A replaced backend keeps its place; the version moves.
	aws2 := &named{"aws", "2"}
	s.Put(aws2)
	if got := s.All(); len(got) != 2 || got[1] != aws2 || s.Version() == v {
		t.Fatalf("after replacing aws: %v, version %d (was %d)", got, s.Version(), v)
	}
	v = s.Version()
	if s.Remove("gcp") != nil || s.Version() != v {
		t.Fatal("removing a missing backend changed the set")
	}
	if s.Remove("aws") != aws2 || s.Get("aws") != nil || s.Version() == v {
		t.Fatal("Remove(aws) did not remove it")
	}
	s.Put(aws)
	if got := s.Names(); !slices.Equal(got, []string{"local", "aws"}) {
		t.Fatalf("names = %v after putting aws back", got)
	}
	// The caller's slice is its own.
	all := s.All()
	all[0] = nil
	if s.Get("local") != local {
		t.Fatal("changing All's result changed the set")
	}
}

func TestNilSetIsEmpty(t *testing.T) {
	t.Parallel()
	var s *Set
	if s.Get("local") != nil || s.All() != nil || s.Len() != 0 || s.Version() != 0 || s.Names() != nil {
		t.Fatal("a nil set is not empty")
	}
}

func TestSetConcurrentUse(t *testing.T) {
	t.Parallel()
	s := NewSet(&named{"local", ""})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if i%2 == 0 {
					s.Put(&named{"aws", ""})
					s.Remove("aws")
				} else if s.Get("local") == nil || s.Len() == 0 {
					t.Error("local went missing")
					return
				}
				_ = s.All()
			}
		}()
	}
	wg.Wait()
}

// TestSetRemoveWaitsForUse: a backend removed while a use of the set is in
// progress is out of the set at once, but Remove returns only once the use
// has ended, so that nothing launches with it after Remove.
func TestSetRemoveWaitsForUse(t *testing.T) {
	t.Parallel()
	s := NewSet(&named{"local", ""}, &named{"aws", ""})
	done := s.Use()
	removed := make(chan Backend)
	go func() { removed <- s.Remove("aws") }()
	for s.Get("aws") != nil {
		runtime.Gosched()
	}
	select {
	case <-removed:
		t.Fatal("Remove returned while a use was in progress")
	default:
	}
	done()
	if b := <-removed; b == nil || b.Name() != "aws" {
		t.Fatalf("Remove = %v, want aws", b)
	}
	// A removal of nothing does not wait.
	done = s.Use()
	defer done()
	if b := s.Remove("gcp"); b != nil {
		t.Fatalf("Remove(gcp) = %v", b)
	}
}
