package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/store"
)

// Replicas on one database. Each replica has an identity that outlives its
// restarts (replica.id in its data directory), so that a replica that
// restarts finds the autoscaler's lease it held still its own. It records
// itself in the database (store.Replica) at its start and every
// replicaRenew while it runs, and compares itself with the others seen
// lately: replicas that could not serve as one server are refused at start,
// with what to change:
//
//   - another server key: a session, or AWS credentials, sealed by one
//     replica could not be opened by the other;
//   - other storage for code archives and artifacts: a runner could not
//     fetch the code of a run submitted through another replica;
//   - another --external-url: an on-demand instance would be told the
//     address of the replica that launched it, and lose the server with it.
//
// A replica alone on PostgreSQL with what a second one could not share
// says so at start.

// replicaIDFile holds a replica's identity in its data directory;
// storageIDFile the identity of the local directory its code archives and
// artifacts are in.
const (
	replicaIDFile = "replica.id"
	storageIDFile = "storage.id"
)

// Replica record timings: a replica renews its record every replicaRenew;
// one not seen for replicaLive is taken for stopped, and its record is
// removed after replicaForget.
const (
	replicaRenew  = 5 * time.Second
	replicaLive   = 3 * replicaRenew
	replicaForget = 24 * time.Hour
)

// replicaID returns the identity of this replica, and a function that
// gives it up: the one in dataDir/replica.id, made at the first start and
// held under a lock while the server runs. A second server on the same
// data directory, which finds it locked, gets a random identity of its own
// for its life: two running replicas never share one (they would both take
// the autoscaler's lease for their own).
func replicaID(dataDir string) (id string, release func(), err error) {
	path := filepath.Join(dataDir, replicaIDFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("replica identity: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return "r-" + randomID(), func() {}, nil
		}
		return "", nil, fmt.Errorf("replica identity: lock %s: %w", path, err)
	}
	release = func() { f.Close() } // closing the file releases the lock
	b, err := os.ReadFile(path)
	if err != nil {
		release()
		return "", nil, fmt.Errorf("replica identity: %w", err)
	}
	if id = strings.TrimSpace(string(b)); id != "" {
		return id, release, nil
	}
	id = "r-" + randomID()
	if _, err := f.WriteString(id + "\n"); err != nil {
		release()
		return "", nil, fmt.Errorf("replica identity: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		release()
		return "", nil, fmt.Errorf("replica identity: write %s: %w", path, err)
	}
	return id, release, nil
}

func randomID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// storageOf says where a server keeps code archives and artifacts, as a
// replica records it: the bucket, or "local", an identity of the directory
// (the same for every server that has it, over NFS say), the host and the
// path. Two replicas see the same files when storageKey of theirs agree.
func storageOf(cfg Config, host string) (string, error) {
	if cfg.Artifacts != "" {
		if cfg.S3Endpoint != "" {
			return cfg.Artifacts + " at " + cfg.S3Endpoint, nil
		}
		return cfg.Artifacts, nil
	}
	dir := filepath.Join(cfg.DataDir, "blobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("artifact directory: %w", err)
	}
	path := filepath.Join(dir, storageIDFile)
	id := "local-" + randomID()
	if err := os.WriteFile(path+".new", []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("artifact directory: %w", err)
	}
	// Linked into place unless it is there already: the first one stays.
	if err := os.Link(path+".new", path); err != nil && !errors.Is(err, os.ErrExist) {
		os.Remove(path + ".new")
		return "", fmt.Errorf("artifact directory: %w", err)
	}
	os.Remove(path + ".new")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("artifact directory: %w", err)
	}
	return strings.TrimSpace(string(b)) + " " + host + ":" + dir, nil
}

// storageKey is what two replicas' Storage must agree on.
func storageKey(storage string) string {
	k, _, _ := strings.Cut(storage, " ")
	if strings.HasPrefix(k, "local-") {
		return k
	}
	return storage
}

// describeStorage is a replica's storage in words.
func describeStorage(storage string) string {
	if k, where, ok := strings.Cut(storage, " "); ok && strings.HasPrefix(k, "local-") {
		return "the local directory " + where
	}
	return storage
}

func describeURL(external string) string {
	if external == "" {
		return "its own address (no --external-url)"
	}
	return external
}

// joinReplicas claims this replica's identity and, on PostgreSQL, checks it
// against the replicas running on the database and records it. It fails
// with what to change when this replica could not serve with them.
func (s *Server) joinReplicas(ctx context.Context, keySource string) error {
	id, release, err := replicaID(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.replicaID, s.releaseReplicaID = id, release
	host, _ := os.Hostname()
	now := s.cfg.Now()
	s.replica = store.Replica{ID: id, Host: host, ExternalURL: s.cfg.ExternalURL, KeyCheck: s.box.Check(), StartedAt: now, SeenAt: now}
	var others []*store.Replica
	if s.cfg.DB != "" {
		if s.replica.Storage, err = storageOf(s.cfg, host); err != nil {
			return err
		}
		live, err := s.store.ReplicaList(ctx, store.ReplicaListParams{SeenSince: now.Add(-replicaLive)})
		if err != nil {
			return err
		}
		for _, r := range live {
			if r.ID != id {
				others = append(others, r)
			}
		}
		if err := s.checkReplicas(others, keySource); err != nil {
			return err
		}
	}
	if err := s.checkKey(ctx, len(others) > 0, keySource); err != nil {
		return err
	}
	if s.cfg.DB == "" {
		return nil
	}
	if len(others) == 0 {
		s.warnAlone()
	}
	return s.store.ReplicaPut(ctx, &s.replica)
}

// checkReplicas compares this replica with the others running.
func (s *Server) checkReplicas(others []*store.Replica, keySource string) error {
	me := s.replica
	for _, r := range others {
		who := fmt.Sprintf("replica %s on host %s (at %s)", r.ID, r.Host, cmpOr(r.URL, "an address not yet known"))
		switch {
		case r.KeyCheck != me.KeyCheck:
			return fmt.Errorf("this replica's server key (from %s) is not the key of %s, which runs on this database: "+
				"sessions and AWS credentials sealed by one replica cannot be opened by the other. Give every replica the same key: "+
				"set %s to the same value on each (the content of encryption.key in the data directory of the replica that made it, "+
				"or the value the other replica has), then start this replica again", keySource, who, secretbox.EnvKey)
		case storageKey(r.Storage) != storageKey(me.Storage):
			return fmt.Errorf("this replica keeps code archives and artifacts in %s, but %s keeps them in %s: "+
				"runners could not fetch the code of runs submitted through the other replica, and artifacts would be missing. "+
				"Start every replica with the same --artifacts s3://bucket/prefix (and --s3-endpoint), then start this replica again",
				describeStorage(me.Storage), who, describeStorage(r.Storage))
		case r.ExternalURL != me.ExternalURL || me.ExternalURL == "":
			return fmt.Errorf("this replica tells runners and on-demand instances to reach the server at %s, but %s tells them %s: "+
				"an instance would be given the address of the replica that launched it, and lose the server when that replica stops. "+
				"Start every replica with the same --external-url, the address of the load balancer in front of them, then start this replica again",
				describeURL(me.ExternalURL), who, describeURL(r.ExternalURL))
		}
	}
	return nil
}

// checkKey compares the server key with the one the database knows of
// (store.SettingKeyCheck), recording it at the first start. A changed key
// is refused while another replica runs with the old one; with none
// running it is taken, with a warning: what was sealed under the old key
// cannot be opened any more.
func (s *Server) checkKey(ctx context.Context, othersLive bool, keySource string) error {
	mine := s.box.Check()
	known, err := s.store.SettingInit(ctx, store.SettingInitParams{Name: store.SettingKeyCheck, Value: mine})
	if err != nil {
		return fmt.Errorf("server key check: %w", err)
	}
	if known == mine {
		return nil
	}
	if othersLive {
		return fmt.Errorf("this replica's server key (from %s) is not the key the replicas running on this database use: "+
			"sessions and AWS credentials sealed by one replica cannot be opened by the other. Give every replica the same key: "+
			"set %s to the same value on each, then start this replica again", keySource, secretbox.EnvKey)
	}
	s.log.Warn("the server key is not the one this database was used with: AWS credentials saved before cannot be read "+
		"(save them again with `dstack aws config`) and web sessions end. If this server is a replica of others that are stopped now, "+
		"stop it and give it their "+secretbox.EnvKey+" instead", "key_source", keySource)
	if err := s.store.SettingPut(ctx, store.SettingPutParams{Name: store.SettingKeyCheck, Value: mine}); err != nil {
		return fmt.Errorf("server key check: %w", err)
	}
	return nil
}

// warnAlone says, on PostgreSQL, what a second replica could not share
// with this one.
func (s *Server) warnAlone() {
	if s.cfg.Artifacts == "" {
		s.log.Warn("on PostgreSQL with code archives and artifacts in the data directory: a second replica on this database "+
			"would not see them, and refuses to start unless it shares this directory. For several replicas, start each with "+
			"--artifacts s3://bucket/prefix", "dir", filepath.Join(s.cfg.DataDir, "blobs"))
	}
	if s.cfg.ExternalURL == "" {
		s.log.Warn("on PostgreSQL without --external-url: on-demand instances are told this replica's own address, and a second " +
			"replica refuses to start until every replica has the same --external-url, the address of the load balancer in front of them")
	}
}

// replicaLoop renews this replica's record while the server runs, forgets
// replicas long gone, and says when a replica that could not serve with
// this one started meanwhile (two that started at once both passed their
// checks).
func (s *Server) replicaLoop(ctx context.Context) {
	if s.cfg.DB == "" {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(replicaRenew)
	defer t.Stop()
	warned := map[string]bool{}
	for {
		s.renewReplica(ctx, warned)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) renewReplica(ctx context.Context, warned map[string]bool) {
	now := s.cfg.Now()
	s.replica.URL, s.replica.SeenAt = s.URL(), now
	if err := s.store.ReplicaPut(ctx, &s.replica); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("renew this replica's record", "err", err)
		}
		return
	}
	if _, err := s.store.ReplicaDelete(ctx, store.ReplicaDeleteParams{SeenBefore: now.Add(-replicaForget)}); err != nil && ctx.Err() == nil {
		s.log.Warn("forget old replicas", "err", err)
	}
	live, err := s.store.ReplicaList(ctx, store.ReplicaListParams{SeenSince: now.Add(-replicaLive)})
	if err != nil {
		return
	}
	for _, r := range live {
		if r.ID == s.replica.ID || warned[r.ID] {
			continue
		}
		if err := s.checkReplicas([]*store.Replica{r}, "this server's configuration"); err != nil {
			warned[r.ID] = true
			s.log.Error("a replica that cannot serve with this one runs on the same database", "err", err)
		}
	}
}

// leaveReplicas removes this replica's record as it stops, and gives its
// identity up.
func (s *Server) leaveReplicas() {
	if s.cfg.DB != "" && s.replica.ID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.store.ReplicaDelete(ctx, store.ReplicaDeleteParams{ID: s.replica.ID}); err != nil {
			s.log.Warn("remove this replica's record", "err", err)
		}
	}
	if s.releaseReplicaID != nil {
		s.releaseReplicaID()
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
