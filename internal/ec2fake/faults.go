package ec2fake

import (
	"net/http"
	"slices"
	"time"
)

// Faults make the fake misbehave the way EC2 does on a bad day. Each one
// applies to the next n requests of its action (n < 0: until ClearFaults);
// the action "*" matches every action. When several faults match a request
// they apply in this order: every delay (added up), then the first error
// (the action is not performed), then a lost answer (the action is performed,
// the answer dropped). RepeatLaunchIndex and StrayInstance change what
// RunInstances does instead (see each).

type faultKind int

const (
	faultError faultKind = iota
	faultDelay
	faultLose
	faultRepeatIndex // RunInstances: the second instance repeats the first's launch index
	faultStray       // RunInstances: one more instance, left out of the answer
)

type fault struct {
	action string
	kind   faultKind
	err    *apiError
	delay  time.Duration
	left   int // < 0: forever
}

// faultPlan is what the faults make of one request.
type faultPlan struct {
	delay time.Duration
	err   *apiError
	lose  bool
}

// Fail makes the next n requests of action answer with an EC2 error: HTTP
// 503 for RequestLimitExceeded and Unavailable, 500 for InternalError and
// InternalFailure, 400 for any other code.
func (s *Server) Fail(action, code, message string, n int) {
	status := http.StatusBadRequest
	switch code {
	case "RequestLimitExceeded", "Unavailable":
		status = http.StatusServiceUnavailable
	case "InternalError", "InternalFailure":
		status = http.StatusInternalServerError
	}
	s.addFault(&fault{action: action, kind: faultError, left: n,
		err: &apiError{status: status, code: code, message: message}})
}

// Throttle makes the next n requests of action fail with
// RequestLimitExceeded, which the SDK retries by itself.
func (s *Server) Throttle(action string, n int) {
	s.Fail(action, "RequestLimitExceeded", "Request limit exceeded.", n)
}

// Delay holds the answer to the next n requests of action for d. A client
// that gives up meanwhile gets nothing, and the action is not performed.
func (s *Server) Delay(action string, d time.Duration, n int) {
	s.addFault(&fault{action: action, kind: faultDelay, delay: d, left: n})
}

// LoseResponse performs the next n requests of action, then drops the
// connection without an answer, as a network failure after EC2 acted would.
func (s *Server) LoseResponse(action string, n int) {
	s.addFault(&fault{action: action, kind: faultLose, left: n})
}

// RemoveAction makes the endpoint lack action, as an EC2-compatible
// endpoint that does not implement it: every request answers InvalidAction
// (HTTP 400) until ClearFaults.
func (s *Server) RemoveAction(action string) {
	s.Fail(action, "InvalidAction", "The action "+action+" is not valid for this web service.", -1)
}

// RepeatLaunchIndex makes the next n RunInstances calls that launch more
// than one instance give their second instance the launch index
// (AmiLaunchIndex) of the first, in the answer and in DescribeInstances, as
// some EC2-compatible endpoints do.
func (s *Server) RepeatLaunchIndex(n int) {
	s.addFault(&fault{action: "RunInstances", kind: faultRepeatIndex, left: n})
}

// StrayInstance makes the next n RunInstances calls that launch start one
// more instance than they answer with: a copy of the first instance of the
// launch (its tags, user data and launch index) that only DescribeInstances
// shows. It carries the tags of an instance that is another, as an endpoint
// that tags the wrong instance leaves it.
func (s *Server) StrayInstance(n int) {
	s.addFault(&fault{action: "RunInstances", kind: faultStray, left: n})
}

// ClearFaults removes every fault and every capacity limit set with
// SetCapacity.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.faults = nil
	clear(s.state.capacity)
}

func (s *Server) addFault(f *fault) {
	if f.left == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.faults = append(s.state.faults, f)
}

// takeFaults consumes the faults matching one request of action.
func (s *Server) takeFaults(action string) faultPlan {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p faultPlan
	take := func(f *fault) {
		if f.left > 0 {
			f.left--
		}
	}
	for _, f := range s.state.faults {
		if f.action != action && f.action != "*" || f.left == 0 {
			continue
		}
		switch f.kind {
		case faultDelay:
			p.delay += f.delay
			take(f)
		case faultError:
			if p.err == nil {
				p.err = f.err
				take(f)
			}
		}
	}
	if p.err == nil {
		for _, f := range s.state.faults {
			if (f.action == action || f.action == "*") && f.kind == faultLose && f.left != 0 {
				p.lose = true
				take(f)
				break
			}
		}
	}
	s.state.faults = slices.DeleteFunc(s.state.faults, func(f *fault) bool { return f.left == 0 })
	return p
}

// takeLaunchFault consumes one fault of kind (faultRepeatIndex or
// faultStray), reporting whether there was one. Called with s.mu held.
func (s *Server) takeLaunchFault(kind faultKind) bool {
	for _, f := range s.state.faults {
		if f.kind == kind && f.left != 0 {
			if f.left > 0 {
				f.left--
			}
			s.state.faults = slices.DeleteFunc(s.state.faults, func(f *fault) bool { return f.left == 0 })
			return true
		}
	}
	return false
}

type capacityKey struct {
	region, instanceType string
	spot                 bool
}

// SetCapacity lets at most n more instances of that type and purchase option
// be launched in region. RunInstances beyond it launches what fits when that
// satisfies MinCount and fails with InsufficientInstanceCapacity otherwise.
// n < 0 removes the limit.
func (s *Server) SetCapacity(region, instanceType string, spot bool, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := capacityKey{region, instanceType, spot}
	if n < 0 {
		delete(s.state.capacity, k)
		return
	}
	s.state.capacity[k] = n
}
