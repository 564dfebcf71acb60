package backend

import "sync"

// Set is the backends a server launches on-demand runners in. It changes
// while the server runs: AWS is configured (`dstack aws config`) and cleared
// at run time, while the local backend is there from the start. The server
// and its autoscaler share one Set and read it afresh on each use, so a
// backend put or removed takes effect at their next request or pass.
//
// A reader that launches with the backends (an autoscaler pass) marks
// its use with Use, and Remove waits for the uses in progress: once Remove
// has returned, nothing launches with the removed backend, so counting its
// instances then misses none.
//
// A Set is safe for concurrent use. The zero value and a nil *Set are
// empty sets (a nil one cannot be changed).
type Set struct {
	mu      sync.RWMutex
	bs      []Backend
	version uint64
	// inUse is held shared by each Use in progress.
	inUse sync.RWMutex
}

// NewSet returns a set of bs; of two with one name, the later one stays.
func NewSet(bs ...Backend) *Set {
	s := &Set{}
	for _, b := range bs {
		s.Put(b)
	}
	return s
}

// Get returns the backend named name, or nil.
func (s *Set) Get(name string) Backend {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, b := range s.bs {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// All returns the backends in the order they were first put: a backend
// replaced by Put keeps its place. The slice is the caller's.
func (s *Set) All() []Backend {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Backend, len(s.bs))
	copy(out, s.bs)
	return out
}

// Names returns the backends' names in the order of All.
func (s *Set) Names() []string {
	var out []string
	for _, b := range s.All() {
		out = append(out, b.Name())
	}
	return out
}

// Len is the number of backends.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.bs)
}

// Put adds b, or replaces the backend with b's name in its place.
func (s *Set) Put(b Backend) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	for i, have := range s.bs {
		if have.Name() == b.Name() {
			s.bs[i] = b
			return
		}
	}
	s.bs = append(s.bs, b)
}

// Remove removes the backend named name and returns it, or nil when there
// was none. It returns once every Use in progress has ended.
func (s *Set) Remove(name string) Backend {
	b := s.remove(name)
	if b != nil {
		s.inUse.Lock()
		s.inUse.Unlock() //nolint:staticcheck // an empty critical section: waiting for the uses is the point
	}
	return b
}

func (s *Set) remove(name string) Backend {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.bs {
		if b.Name() == name {
			s.bs = append(s.bs[:i:i], s.bs[i+1:]...)
			s.version++
			return b
		}
	}
	return nil
}

// Use marks a use of the backends in progress until done is called; Remove
// waits for it. A use must not call Remove, nor Use again.
func (s *Set) Use() (done func()) {
	if s == nil {
		return func() {}
	}
	s.inUse.RLock()
	return s.inUse.RUnlock
}

// Version grows with every Put and Remove, so that a reader that caches
// what the backends said (their offers) knows to ask again.
func (s *Set) Version() uint64 {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}
