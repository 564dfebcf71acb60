package server

import (
	"cmp"
	"strconv"
	"strings"
	"sync"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/notify"
)

// Replicas that share a PostgreSQL database tell each other what changed
// through a notify.Bus: each wake of the queue (a user's jobs queued, a
// job's stop asked), each change published to the event streams, each wake
// of the autoscaler, each growth of a job's log and each runner credential
// to read afresh (revoked, removed, its runner's state changed) is relayed,
// and the other replicas do the same on their side. On SQLite there is one replica
// and nothing to relay.
//
// A message is one line: a kind and its arguments, separated by spaces.
//
//	w KEY            wake the waiters on KEY (queue.go's keys)
//	e USER KINDS     publish KINDS (comma-separated) to USER's streams; USER * is every stream
//	a                wake the autoscaler
//	l JOB SIZE       the log of job JOB is SIZE bytes long now
//	c RUNNER         forget the cached credential of runner RUNNER; * every one
const (
	msgWake      = "w"
	msgEvent     = "e"
	msgAutoscale = "a"
	msgLogGrew   = "l"
	msgForget    = "c"
)

// replicaBus is the server's side of the bus: what it relays, and what it
// does with what the others relay.
type replicaBus struct {
	bus *notify.Bus // nil on SQLite

	mu sync.Mutex
	// logGrew is called when another replica says a job's log grew; see
	// Server.onLogGrew.
	logGrew func(jobID string, size int64)
}

// newBus makes the bus of a server on PostgreSQL (none on SQLite) and
// hooks the queue, the event streams and the autoscaler's wake into it.
// The server starts it with its loops.
func (s *Server) newBus() error {
	s.relay = &replicaBus{}
	if s.cfg.DB == "" {
		return nil
	}
	b, err := notify.New(notify.Config{DSN: s.cfg.DB, Receive: s.receive, Resync: s.resync, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	s.relay.bus = b
	s.queue.relay = func(key string) { b.Publish(msgWake + " " + key) }
	s.events.relay = func(userID string, kinds []api.EventKind) {
		if userID == "" {
			userID = "*"
		}
		ks := make([]string, len(kinds))
		for i, k := range kinds {
			ks[i] = string(k)
		}
		b.Publish(msgEvent + " " + userID + " " + strings.Join(ks, ","))
	}
	return nil
}

// forgetRunner drops the cached credential of runner id here and on the
// other replicas ("" drops every one), so that the next call of the runner
// is checked against the store wherever it lands: a revocation or a
// removal holds on every replica at once.
func (s *Server) forgetRunner(id string) {
	if id == "" {
		s.auth.forgetRunners()
	} else {
		s.auth.forgetRunner(id)
	}
	if s.relay.bus != nil {
		s.relay.bus.Publish(msgForget + " " + cmp.Or(id, "*"))
	}
}

// relayAutoscalerWake asks the autoscaler of the other replicas for a pass:
// whichever holds the lease acts on it.
func (s *Server) relayAutoscalerWake() {
	if s.relay.bus != nil {
		s.relay.bus.Publish(msgAutoscale)
	}
}

// publishLogGrew tells the other replicas that the log of job jobID is
// size bytes long now, so that those following it (`logs -f`) read on at
// once. On SQLite it does nothing.
func (s *Server) publishLogGrew(jobID string, size int64) {
	if s.relay.bus != nil && jobID != "" {
		s.relay.bus.Publish(msgLogGrew + " " + jobID + " " + strconv.FormatInt(size, 10))
	}
}

// onLogGrew sets what is called, from the bus's goroutine (so it must not
// block), when another replica says the log of job jobID is size bytes
// long now. jobID "" (and size -1) means any job's log may have grown: the
// bus was cut off for a while and messages may have been missed. Set it
// before the server starts.
func (s *Server) onLogGrew(fn func(jobID string, size int64)) {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	s.relay.logGrew = fn
}

func (s *Server) logGrewElsewhere(jobID string, size int64) {
	s.relay.mu.Lock()
	fn := s.relay.logGrew
	s.relay.mu.Unlock()
	if fn != nil {
		fn(jobID, size)
	}
}

// receive does here what another replica relayed.
func (s *Server) receive(line string) {
	kind, rest, _ := strings.Cut(line, " ")
	switch kind {
	case msgWake:
		if rest != "" {
			s.queue.wakeHere(rest)
		}
	case msgEvent:
		user, list, ok := strings.Cut(rest, " ")
		if !ok {
			break
		}
		if user == "*" {
			user = ""
		}
		var kinds []api.EventKind
		for k := range strings.SplitSeq(list, ",") {
			if k != "" {
				kinds = append(kinds, api.EventKind(k))
			}
		}
		s.events.publishHere(user, kinds...)
	case msgAutoscale:
		s.wakeAutoscalerHere()
	case msgForget:
		switch rest {
		case "*":
			s.auth.forgetRunners()
		case "":
		default:
			s.auth.forgetRunner(rest)
		}
	case msgLogGrew:
		job, size, ok := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(size, 10, 64)
		if ok && err == nil && job != "" {
			s.logGrewElsewhere(job, n)
		}
	default:
		// A message of a newer replica during an upgrade: nothing to do.
		s.log.Debug("unknown message from another replica", "line", line)
	}
}

// resync wakes everything that waits here, and reads every runner
// credential afresh: the bus was cut off, and what other replicas sent
// meanwhile is lost.
func (s *Server) resync() {
	s.auth.forgetRunners()
	s.queue.wakeAll()
	s.events.publishHere("", api.EventRuns, api.EventRunners, api.EventLimits, api.EventInstances)
	s.wakeAutoscalerHere()
	s.logGrewElsewhere("", -1)
}

// BusStats are the counts of the server's bus, for tests and benchmarks;
// zero on SQLite.
func (s *Server) BusStats() notify.Stats {
	if s.relay.bus == nil {
		return notify.Stats{}
	}
	return s.relay.bus.Stats()
}
