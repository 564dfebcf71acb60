package sqlcore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dstackai/dstack/store"
)

// maxClaimBatch bounds the claims one transaction takes, and the pending
// jobs of each user a batch reads (claimCandidates), which are as many as
// its claims but at least minClaimRead: enough to find jobs that fit past
// some that do not.
const (
	maxClaimBatch = 256
	minClaimRead  = 64
)

// maxStatusBatch bounds the status changes one transaction takes.
const maxStatusBatch = 128

// claimBatch does the claims reqs, in their order, in one transaction, with
// the outcome each would have had run one after the other through claimSQL.
//
// claimSQL orders every pending job that fits on each call. A batch reads
// instead, once, the first maxClaimBatch pending jobs of each user who may
// get one (claimCandidates) with the users' turns and caps, assigns the jobs
// in memory by claimSQL's rules, and writes the assignments with two
// statements. Where the jobs read cannot settle a claim (a user whose turn
// comes first has more pending jobs than were read, none of which fits),
// the assignments so far are written and that claim runs claimSQL itself;
// the batch then reads again for the claims after it.
func (s *Store) claimBatch(ctx context.Context, q Querier, reqs []store.JobClaimNextParams) ([]outcome[*store.Job], error) {
	if err := s.claimLock(ctx, q); err != nil {
		return nil, err
	}
	return s.claimLocked(ctx, q, reqs)
}

// claimLock takes the claim lock (Dialect.ClaimLock) until the transaction
// ends.
func (s *Store) claimLock(ctx context.Context, q Querier) error {
	if s.d.ClaimLock == "" {
		return nil
	}
	if d, ok := q.(Deferrer); ok {
		d.Defer(s.d.ClaimLock) // taken before the claim's first read
		return nil
	}
	if _, err := q.Exec(ctx, s.d.ClaimLock); err != nil {
		return fmt.Errorf("claim lock: %w", err)
	}
	return nil
}

// claimLocked is claimBatch for a caller that holds the claim lock.
func (s *Store) claimLocked(ctx context.Context, q Querier, reqs []store.JobClaimNextParams) ([]outcome[*store.Job], error) {
	return s.claimLockedRead(ctx, q, reqs, nil)
}

// claimLockedRead is claimLocked where pre, if not nil, is what the claims
// start from (claimRead), read already for these claims or more.
func (s *Store) claimLockedRead(ctx context.Context, q Querier, reqs []store.JobClaimNextParams, pre *claimRead) ([]outcome[*store.Job], error) {
	outs := make([]outcome[*store.Job], len(reqs))
	for i := range outs {
		outs[i].err = store.ErrNotFound
	}
	if pre == nil {
		pre = s.prepareClaimReads(q, reqs)
		if err := queryAll(ctx, q, pre.stmts, pre.scan); err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
	}
	if err := s.finishClaimReads(ctx, q, pre); err != nil {
		return nil, err
	}
	runners, held, first := pre.runners, pre.held, pre.first
	var todo []int
	for i, p := range reqs {
		if j, ok := held[p.RunnerID]; ok && p.Redeliver {
			j.Redelivered = true
			outs[i] = outcome[*store.Job]{res: j}
			continue
		}
		if r, ok := runners[p.RunnerID]; ok && r.canClaim {
			todo = append(todo, i)
		}
	}
	for len(todo) > 0 {
		st := first.usable(reqs, todo, runners)
		first = nil
		if st == nil {
			var err error
			if st, err = s.claimCandidates(ctx, q, reqs, todo, runners); err != nil {
				return nil, err
			}
		}
		var (
			picks []claimPick
			exact = -1 // the first claim the candidates cannot settle
		)
		for k, i := range todo {
			c, ok := st.pick(reqs[i], runners[reqs[i].RunnerID])
			if !ok {
				exact = k
				break
			}
			if c != nil {
				picks = append(picks, claimPick{req: i, job: c})
				st.take(c)
			}
		}
		lost, err := s.claimWrite(ctx, q, reqs, picks, st.seqBase, outs)
		if err != nil {
			return nil, err
		}
		var redo []int
		if exact >= 0 {
			redo = append(lost, todo[exact])
			todo = todo[exact+1:]
		} else {
			redo, todo = lost, nil
		}
		// A job taken from under a pick (stopped meanwhile), or a claim
		// the candidates could not settle, runs claimSQL.
		for _, i := range redo {
			j, err := s.claimOne(ctx, q, reqs[i])
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			outs[i] = outcome[*store.Job]{res: j, err: err}
		}
	}
	return outs, nil
}

// claimRead is what claims start from: their runners (runnersStmt) and
// their instances (claimInstances), the jobs not yet started that the
// runners which ask for them again hold (heldStmt), and, where the database
// pipelines, the first candidates of the claims' users (candidatesFor), all
// read in one round trip, with other statements of the caller's where it
// has some. prepareClaimReads makes the statements, scan reads the rows of
// each, finishClaimReads completes it; first stays nil where it was not
// read.
type claimRead struct {
	stmts           []Stmt
	heldAt, firstAt int
	runners         map[string]claimRunner
	instances       map[string]string
	held            map[string]*store.Job
	first           *claimState
}

func (s *Store) prepareClaimReads(q Querier, reqs []store.JobClaimNextParams) *claimRead {
	r := &claimRead{stmts: []Stmt{s.runnersStmt(reqs)}, heldAt: -1, firstAt: -1}
	if st, ok := s.heldStmt(reqs); ok {
		r.heldAt = len(r.stmts)
		r.stmts = append(r.stmts, st)
	}
	if _, ok := q.(Pipeliner); ok && s.d.Lateral {
		// Read now, the candidates serve the first assignments unless a
		// runner turns out to take anyone's jobs (claimState.usable).
		var users []any // every user's, where the last batch had a runner that takes anyone's
		if !s.claimedForAnyone.Load() {
			for _, p := range reqs {
				users = appendNew(users, p.UserID)
			}
		}
		var st Stmt
		r.first, st = s.candidatesFor(users, len(reqs))
		r.firstAt = len(r.stmts)
		r.stmts = append(r.stmts, st)
	}
	return r
}

// scan reads the rows of r.stmts[i].
func (r *claimRead) scan(i int, rows Rows) error {
	var err error
	switch i {
	case 0:
		r.runners, r.instances, err = scanRunners(rows)
	case r.heldAt:
		r.held, err = scanHeld(rows)
	case r.firstAt:
		err = r.first.scanJoined(rows)
	}
	return err
}

// finishClaimReads completes r once its statements were read: it notes
// whether a runner of the claims takes anyone's jobs (claimedForAnyone) and
// reads the instances of the runners that have one (claimInstances).
func (s *Store) finishClaimReads(ctx context.Context, q Querier, r *claimRead) error {
	anyone := false
	for _, rn := range r.runners {
		anyone = anyone || rn.anyone
	}
	s.claimedForAnyone.Store(anyone)
	return s.claimInstances(ctx, q, r.runners, r.instances)
}

// heldStmt reads the jobs not yet started (downloading) of the runners of
// the claims that ask to be given theirs again (Redeliver); false when none
// asks.
func (s *Store) heldStmt(reqs []store.JobClaimNextParams) (Stmt, bool) {
	var ids []any
	for _, p := range reqs {
		if p.Redeliver {
			ids = appendNew(ids, p.RunnerID)
		}
	}
	if len(ids) == 0 {
		return Stmt{}, false
	}
	in, args := s.in("runner_id", 1, ids)
	return Stmt{SQL: `SELECT ` + jobColumns + ` FROM jobs
		WHERE ` + in + ` AND status = 'downloading' ORDER BY claimed_at`, Args: args}, true
}

// scanHeld reads the rows of heldStmt, the first job of each runner.
func scanHeld(rows Rows) (map[string]*store.Job, error) {
	out := map[string]*store.Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("jobs held: %w", err)
		}
		if _, ok := out[j.RunnerID]; !ok {
			out[j.RunnerID] = j
		}
	}
	return out, nil
}

// appendNew appends id to the statement arguments args unless they hold it.
func appendNew(args []any, id string) []any {
	if slices.Contains(args, any(id)) {
		return args
	}
	return append(args, id)
}

// claimRunner is what a claim needs of its runner.
type claimRunner struct {
	// anyone: the runner takes any user's jobs (shared, or on-demand).
	anyone bool
	// canClaim: the runner exists, is not interrupted, and its instance, if
	// any, is running.
	canClaim bool
	// bound: the runner's instance is bound to image, and the runner takes
	// only jobs of that image (claimSQL).
	bound bool
	image string
}

// runnersStmt reads the runners of reqs, under a key share lock on
// PostgreSQL (Dialect.ForKeyShare), as claimSQL does.
func (s *Store) runnersStmt(reqs []store.JobClaimNextParams) Stmt {
	ids := make([]any, 0, len(reqs))
	for _, p := range reqs {
		ids = appendNew(ids, p.RunnerID)
	}
	in, args := s.in("r.id", 1, ids)
	return Stmt{SQL: `SELECT r.id, r.shared OR r.instance_id IS NOT NULL, r.interrupted_at IS NULL,
		COALESCE(r.instance_id, '') FROM runners r WHERE ` + in + s.d.ForKeyShare, Args: args}
}

// scanRunners reads the rows of runnersStmt, and the instances of the
// runners that may claim, each with its runner.
func scanRunners(rows Rows) (map[string]claimRunner, map[string]string, error) {
	out := map[string]claimRunner{}
	instances := map[string]string{} // instance → runner
	for rows.Next() {
		var (
			id, instance string
			r            claimRunner
		)
		if err := rows.Scan(&id, &r.anyone, &r.canClaim, &instance); err != nil {
			return nil, nil, fmt.Errorf("runners: %w", err)
		}
		out[id] = r
		if instance != "" && r.canClaim {
			instances[instance] = id
		}
	}
	return out, instances, nil
}

// claimInstances reads the instances of runners (instance → runner) under a
// share lock: a runner claims only while its instance runs, and takes only
// its image's jobs while the instance is bound to one.
func (s *Store) claimInstances(ctx context.Context, q Querier, runners map[string]claimRunner, instances map[string]string) error {
	if len(instances) == 0 {
		return nil
	}
	iids := make([]any, 0, len(instances))
	for id := range instances {
		iids = append(iids, id)
	}
	in, args := s.in("id", 1, iids)
	rows, err := q.Query(ctx, `SELECT id, state, image_bound, image FROM instances WHERE `+in+s.d.ForShare, args...)
	if err != nil {
		return fmt.Errorf("instances: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, state, image string
			bound            bool
		)
		if err := rows.Scan(&id, &state, &bound, &image); err != nil {
			return fmt.Errorf("instances: %w", err)
		}
		r := runners[instances[id]]
		r.canClaim = r.canClaim && state == "running"
		r.bound, r.image = bound, image
		runners[instances[id]] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("instances: %w", err)
	}
	return nil
}

// claimJob is a pending job as a claim sees it.
type claimJob struct {
	id, user                string
	queueSeq                int64
	cpu                     int
	memory, gpus, gpuMemory int64
	gpuName                 string
	image                   string
	taken                   bool
}

// fits reports whether j fits a runner's free resources and, for a runner
// bound to an image, is of its image (claimSQL's test).
func (j *claimJob) fits(p store.JobClaimNextParams, r claimRunner) bool {
	if r.bound && j.image != r.image {
		return false
	}
	var gpuName string
	var gpuMem int64
	if len(p.Free.GPUs) > 0 {
		gpuName, gpuMem = strings.ToLower(p.Free.GPUs[0].Name), p.Free.GPUs[0].MemoryMiB
	}
	return int64(j.cpu) <= int64(p.Free.CPUs) && j.memory <= p.Free.MemoryMiB && j.gpus <= int64(len(p.Free.GPUs)) &&
		j.gpuMemory <= gpuMem && (j.gpuName == "" || strings.Contains(gpuName, j.gpuName))
}

// claimUser is a user with pending jobs, as a claim sees them.
type claimUser struct {
	id         string
	seq        int64 // claim_seq: the lowest has the turn
	maxRunning int64
	active     int64
	jobs       []*claimJob // the first pending ones, in queue order
	// more: the user has pending jobs past jobs.
	more bool
}

func (u *claimUser) capped() bool { return u.maxRunning > 0 && u.active >= u.maxRunning }

// claimState is what a batch assigns from.
type claimState struct {
	users map[string]*claimUser
	// seqBase is the highest claim_seq read; the batch's claims move their
	// users past it, in order.
	seqBase int64
	next    int64
	// limit is how many pending jobs of each user were read, at most.
	limit int
	// everyone: the users read are every user with pending jobs, not
	// only some users'.
	everyone bool
}

// claimCandidates reads the users who may get a job from the claims todo
// (all users when one of their runners takes anyone's, else the runners'
// users), with their turn, cap and active jobs, and the first pending jobs
// of each: as many as the claims, at least minClaimRead.
func (s *Store) claimCandidates(ctx context.Context, q Querier, reqs []store.JobClaimNextParams, todo []int, runners map[string]claimRunner) (*claimState, error) {
	anyone := false
	for _, i := range todo {
		anyone = anyone || runners[reqs[i].RunnerID].anyone
	}
	var users []any
	if !anyone {
		for _, i := range todo {
			users = appendNew(users, reqs[i].UserID)
		}
	}
	st, joined := s.candidatesFor(users, len(todo))
	if s.d.Lateral {
		if err := queryAll(ctx, q, []Stmt{joined}, func(_ int, rows Rows) error { return st.scanJoined(rows) }); err != nil {
			return nil, err
		}
		return st, nil
	}
	filter, args := s.usersFilter(users)
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(claim_seq), 0) FROM users`).Scan(&st.seqBase); err != nil {
		return nil, fmt.Errorf("turns: %w", err)
	}
	st.next = st.seqBase
	rows, err := q.Query(ctx, usersWithPendingSQL(filter), args...)
	if err != nil {
		return nil, fmt.Errorf("users with pending jobs: %w", err)
	}
	var ids []string
	for rows.Next() {
		u := &claimUser{}
		if err := rows.Scan(&u.id, &u.seq, &u.maxRunning, &u.active); err != nil {
			rows.Close()
			return nil, fmt.Errorf("users with pending jobs: %w", err)
		}
		st.users[u.id] = u
		ids = append(ids, u.id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("users with pending jobs: %w", err)
	}
	if len(ids) == 0 {
		return st, nil
	}
	read := func(rows Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var j claimJob
			if err := rows.Scan(&j.id, &j.user, &j.queueSeq, &j.cpu, &j.memory, &j.gpus, &j.gpuMemory, &j.gpuName, &j.image); err != nil {
				return err
			}
			u := st.users[j.user]
			u.jobs = append(u.jobs, &j)
		}
		return rows.Err()
	}
	for _, id := range ids {
		if err = read(q.Query(ctx, perUserSQL("$1", "$2"), id, st.limit+1)); err != nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pending jobs: %w", err)
	}
	st.trim()
	return st, nil
}

// trim puts each user's jobs in queue order and keeps the first st.limit,
// noting whether she has more.
func (st *claimState) trim() {
	for _, u := range st.users {
		slices.SortFunc(u.jobs, func(a, b *claimJob) int { return cmp.Compare(a.queueSeq, b.queueSeq) })
		if len(u.jobs) > st.limit {
			u.jobs, u.more = u.jobs[:st.limit], true
		}
	}
}

// candidatesFor is the state n claims assign from, before it is read, and
// the statement that reads it in one go where the database joins laterally
// (scanJoined): the users among users (every user when nil) who have
// pending jobs, and the first pending jobs of each, as many as the claims
// but at least minClaimRead.
func (s *Store) candidatesFor(users []any, n int) (*claimState, Stmt) {
	st := &claimState{users: map[string]*claimUser{}, limit: min(max(n, minClaimRead), maxClaimBatch), everyone: users == nil}
	filter, args := s.usersFilter(users)
	return st, Stmt{SQL: candidatesJoinedSQL(filter, len(args)+1), Args: append(args, st.limit+1)}
}

// usersFilter is the condition, and its arguments from $1, that a user u
// is one of users; none where users is nil (every user).
func (s *Store) usersFilter(users []any) (string, []any) {
	if users == nil {
		return "", nil
	}
	filter, args := s.in("u.id", 1, users)
	return " AND " + filter, args
}

// usable returns st, read for every claim of reqs (claimRead), to assign
// the claims todo from, or nil where it cannot serve: a runner of one of
// them takes anyone's jobs, and st holds only the claims' users'.
func (st *claimState) usable(reqs []store.JobClaimNextParams, todo []int, runners map[string]claimRunner) *claimState {
	if st == nil || st.everyone {
		return st
	}
	for _, i := range todo {
		if runners[reqs[i].RunnerID].anyone {
			return nil
		}
	}
	return st
}

// scanJoined reads the rows of candidatesFor's statement: the highest turn,
// the users with pending jobs and the first pending jobs of each, in one
// statement, where the database joins laterally: a claim batch's round
// trips are most of its time.
func (st *claimState) scanJoined(rows Rows) error {
	for rows.Next() {
		var (
			u claimUser
			j claimJob
		)
		if err := rows.Scan(&st.seqBase, &u.id, &u.seq, &u.maxRunning, &u.active,
			&j.id, &j.user, &j.queueSeq, &j.cpu, &j.memory, &j.gpus, &j.gpuMemory, &j.gpuName, &j.image); err != nil {
			return fmt.Errorf("pending jobs: %w", err)
		}
		if _, ok := st.users[u.id]; !ok {
			st.users[u.id] = &u
		}
		st.users[u.id].jobs = append(st.users[u.id].jobs, &j)
	}
	st.next = st.seqBase
	st.trim()
	return nil
}

// candidatesJoinedSQL is usersWithPendingSQL(filter) joined laterally with
// perUserSQL, each row carrying the highest turn; $limit is how many
// pending jobs of each user to read. The users are read first
// (MATERIALIZED), so that each one's active jobs are counted once, not once
// per pending job.
func candidatesJoinedSQL(filter string, limit int) string {
	return `WITH u AS MATERIALIZED (` + usersWithPendingSQL(filter) + `)
		SELECT (SELECT COALESCE(MAX(claim_seq), 0) FROM users), u.*, j.*
		FROM u CROSS JOIN LATERAL (` + perUserSQL("u.id", fmt.Sprintf("$%d", limit)) + `) j`
}

// usersWithPendingSQL reads the users with pending jobs (and the condition
// filter), each with her turn, cap and active jobs. Whether a user has a
// pending job is read as her first one in queue order: that the planner can
// only answer well through the index of pending jobs, where an EXISTS read
// every job of the table when the statistics said most jobs are pending
// and none was left.
func usersWithPendingSQL(filter string) string {
	return `SELECT u.id, u.claim_seq, u.max_running,
		CASE WHEN u.max_running > 0 THEN (SELECT COUNT(*) FROM jobs a WHERE a.user_id = u.id AND a.status IN ` + activeStatuses + `) ELSE 0 END AS active
		FROM users u WHERE (SELECT j.queue_seq FROM jobs j WHERE j.user_id = u.id AND j.status = 'pending'
			ORDER BY j.queue_seq LIMIT 1) IS NOT NULL` + filter
}

// pendingCols are the columns of a pending job a claim reads (claimJob).
const pendingCols = `j.id, j.user_id, j.queue_seq, j.cpu, j.memory_mib, j.gpu_count, j.gpu_memory_mib, j.gpu_name, j.image`

// perUserSQL reads the first limit pending jobs of the user user.
func perUserSQL(user, limit string) string {
	return `SELECT ` + pendingCols + ` FROM jobs j WHERE j.user_id = ` + user + ` AND j.status = 'pending' ORDER BY j.queue_seq LIMIT ` + limit
}

// pick chooses the job claimSQL would give the claim p: among the users it
// may take from who are under their cap, the first job that fits of the
// user whose turn comes first (lowest claim_seq; on a tie, the job first in
// queue order). It returns nil when no job fits, and false when the jobs
// read cannot tell: a user whose turn comes before the pick has pending
// jobs that were not read.
func (st *claimState) pick(p store.JobClaimNextParams, r claimRunner) (*claimJob, bool) {
	var (
		best     *claimJob
		bestUser *claimUser
		unread   []*claimUser // users with unread jobs and nothing read that fits
	)
	for _, u := range st.users {
		if (!r.anyone && u.id != p.UserID) || u.capped() {
			continue
		}
		var first *claimJob
		for _, j := range u.jobs {
			if !j.taken && j.fits(p, r) {
				first = j
				break
			}
		}
		if first == nil {
			if u.more {
				unread = append(unread, u)
			}
			continue
		}
		if best == nil || u.seq < bestUser.seq || (u.seq == bestUser.seq && first.queueSeq < best.queueSeq) {
			best, bestUser = first, u
		}
	}
	for _, u := range unread {
		// Its unread jobs come after the ones read, in queue order.
		last := u.jobs[len(u.jobs)-1].queueSeq
		if best == nil || u.seq < bestUser.seq || (u.seq == bestUser.seq && last < best.queueSeq) {
			return nil, false
		}
	}
	return best, true
}

// take marks j claimed: its user's turn moves past everyone's.
func (st *claimState) take(j *claimJob) {
	j.taken = true
	u := st.users[j.user]
	st.next++
	u.seq = st.next
	u.active++
}

// claimPick is a job assigned to the claim reqs[req].
type claimPick struct {
	req int
	job *claimJob
}

// assignJobs gives each job v.id to the runner v.runner at v.claimed,
// unless it is no longer pending. The guard on the status is written so that
// no index can serve it (COALESCE of a column that is never NULL): the jobs
// are looked up by ID, whatever the planner believes of how many are
// pending.
var assignJobs = newBulk(`UPDATE jobs SET status = 'downloading', runner_id = v.runner, claimed_at = v.claimed,
	lease = jobs.lease + 1, status_reason = ''
	FROM v WHERE jobs.id = v.id AND COALESCE(jobs.status, '') = 'pending'
	RETURNING `+jobColumns,
	bulkCol{"id", "text"}, bulkCol{"runner", "text"}, bulkCol{"claimed", "bigint"})

// moveTurns sets the turn of each user v.id to v.seq.
var moveTurns = newBulk(`UPDATE users SET claim_seq = v.seq FROM v WHERE users.id = v.id`,
	bulkCol{"id", "text"}, bulkCol{"seq", "bigint"})

// claimWrite writes picks: the jobs to their runners, and each claiming
// user's turn past every other's, in the order of their last claim. It sets
// the outcome of each claim whose job it took, and returns the claims whose
// job was no longer pending.
func (s *Store) claimWrite(ctx context.Context, q Querier, reqs []store.JobClaimNextParams, picks []claimPick, seqBase int64, outs []outcome[*store.Job]) ([]int, error) {
	if len(picks) == 0 {
		return nil, nil
	}
	argSets := make([][]any, len(picks))
	for i, p := range picks {
		argSets[i] = []any{p.job.id, reqs[p.req].RunnerID, micros(reqs[p.req].Now)}
	}
	byID := make(map[string]*store.Job, len(picks))
	err := s.bulk(ctx, q, assignJobs, argSets, func(rows Rows) error {
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				return err
			}
			byID[j.ID] = j
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("assign jobs: %w", err)
	}
	var (
		lost     []int
		lastTurn = map[string]int64{}
		turn     = seqBase
	)
	for _, p := range picks {
		j, ok := byID[p.job.id]
		if !ok {
			lost = append(lost, p.req)
			continue
		}
		outs[p.req] = outcome[*store.Job]{res: j}
		turn++
		lastTurn[j.UserID] = turn
	}
	turns := make([][]any, 0, len(lastTurn))
	for u, t := range lastTurn {
		turns = append(turns, []any{u, t})
	}
	slices.SortFunc(turns, func(a, b []any) int { return cmp.Compare(a[0].(string), b[0].(string)) })
	// No one reads the turns' update: it goes out with the transaction's
	// next statement, its COMMIT at the latest (Deferrer).
	if err := s.bulkDefer(ctx, q, moveTurns, turns); err != nil {
		return nil, fmt.Errorf("turns: %w", err)
	}
	return lost, nil
}
