// Package autoscale is the controller that carries out the autoscaler's
// decisions: it launches on-demand instances for pending jobs within the
// users' limits, keeps the server's records and the clouds in agreement, and
// terminates instances that are idle, over a limit, or no longer allowed.
//
// The decision itself is plan.Plan, a pure function; this package gathers
// its input (a plan.Snapshot read from the store and the backends) and does
// the I/O it implies. One pass (Controller.Step):
//
//  1. Take or renew the "autoscaler" lease in the store. Only its holder
//     acts, so two server replicas on one database never both launch.
//  2. Read the store: pending jobs, free self-hosted runners, instances,
//     limits (with the users' on-demand switch), unavailable offers; and the
//     backends' offers (cached for Config.OfferTTL).
//  3. Bring each running instance's JobID and IdleSince up to date from its
//     runner (the controller is the only writer of both, from the store's
//     state: an instance is busy while its runner holds a job, and idle
//     since the first pass that saw its runner without one).
//  4. Plan, then carry the decision out: terminations first (they free
//     room), then bindings, then launches.
//  5. Every Config.ReconcileEvery, reconcile the records with the backends'
//     lists, and time out instances that take too long to launch or
//     register.
//
// With no backend (none configured, or AWS cleared) a pass takes the lease
// and only says why jobs wait, from the registered runners
// (plan.WaitingWithoutBackend). The leader's pass is the one place that
// writes why pending jobs wait (their StatusReason), in either mode.
//
// The lifecycle of an instance, with who moves it and the timeout at each
// step:
//
//	       InstanceCreate (intent, counted against the limit)
//	              │
//	              ▼
//	launching, no cloud ID ──Launch──▶ launching, cloud ID ──runner joins──▶ running (busy ⇄ idle)
//	  │  refused: gone                   │                                     │
//	  │  no cloud instance after         │ not registered after                │ idle for IdleTimeout,
//	  │  Grace (crash, lost call): gone  │ RegisterTimeout: terminated         │ over limit, disabled,
//	  ▼                                  ▼                                     ▼ limit deleted
//	gone                          terminating ──Terminate──▶ terminated ◀──────┘
//
// and, from any counted state, gone when the backend no longer has the
// instance (its jobs are requeued by the store).
//
// Crash safety rests on the order of writes: the intent (with the launch's
// idempotency key, its record IDs and the join tokens' hashes) is written
// before the cloud is called, so the limit counts an instance before it can
// exist; every instance is tagged with the server's identity, its record and
// its launch key, so the reconciler can match what the cloud has to what the
// store says. A record left launching without a cloud ID (a crash, or a call
// whose outcome is unknown) is adopted when the backend lists an instance
// tagged with it, and marked gone otherwise once Grace has passed. A
// Launch is never repeated with the same key: the join tokens are stored
// only hashed, so a second call could not give the instances their
// credentials; the job is planned again instead. A tagged instance whose
// record has ended is terminated at once; one with no record at all, or
// whose record names another cloud instance, after Grace. A launch's answer
// is trusted only where it matches: an instance that names no record of the
// launch, or a record another instance of the answer already names (an
// endpoint that repeated a launch index), is terminated at once and never
// given a join token.
package autoscale
