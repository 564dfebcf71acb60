// Package aws is the AWS EC2 backend: it launches dstack's on-demand runners
// as EC2 instances, lists and terminates them, and says what each region
// sells at what price (backend.Backend).
//
// # The instance lifecycle, in EC2 terms
//
//	Launch ─▶ RunInstances (one call, MinCount 1, MaxCount n, ClientToken = launch key)
//	            │  tagged at creation: dstack:server-id, dstack:limit-id, dstack:launch-key,
//	            │  Name = dstack-<record> (and dstack:record-id when n = 1), on the
//	            │  instance, its volumes and its spot request
//	            ▼
//	        CreateTags per instance: dstack:record-id (and the join token when n > 1)
//	            ▼
//	pending ──▶ running ──(user data installs dstack-runner, which joins)──▶ runner busy ⇄ idle
//	   │           │
//	   │           ├─ spot interruption notice: the runner (--watch-spot-interruption) gives its job back
//	   ▼           ▼
//	Terminate ─▶ CancelSpotInstanceRequests + TerminateInstances ─▶ shutting-down ─▶ terminated
//
// EC2 states map onto backend.InstanceState: pending → StatePending, running →
// StateRunning, shutting-down → StateTerminating, terminated → StateGone.
// stopping and stopped are StateGone too: the backend's instances never stop
// (their shutdown behaviour is terminate), so one stopped by hand has no
// runner any more, and the server ends its record and terminates it.
//
// # Join tokens
//
// Each instance's runner joins the server with its own single-use token
// (backend.InstanceSpec.JoinToken), which no other instance of the launch
// may see. RunInstances gives every instance of a call the same user data,
// so the token of a one-instance launch rides in the user data, while the
// instances of a larger launch get theirs after the call: CreateTags puts it
// on the instance (tag dstack:join-token) and the instance, launched with
// instance tags in its metadata, reads its own tag from IMDSv2. Instances
// have no IAM role, so none can read another's tags. (Like user data, the
// tag is visible to the account's users allowed to describe instances; the
// token is spent once the runner has joined.) The user data script
// (userdata.sh.tmpl) then downloads the server's installer (GET /runner)
// and starts dstack-runner: as a systemd service where systemd runs, in the
// foreground otherwise.
//
// # Other resources
//
// Instances run in the region's default VPC, in the server's security group
// dstack-<server ID> (created once per region, no ingress: runners connect
// out to the server), from the newest Canonical Ubuntu 22.04 image for the
// type's architecture or, for NVIDIA GPU types, Amazon's Deep Learning Base
// OSS Nvidia Driver GPU AMI (Ubuntu 22.04), unless Config names images.
// Metadata is IMDSv2 only, with a hop limit of 2 so that containers reach it.
//
// # Calls and errors
//
// Each region has its own SDK client (static credentials, the standard
// retryer with Config.RetryMaxAttempts, which already retries throttling
// with backoff). RunInstances calls, every attempt included, are paced by
// one token bucket shared by all regions (Config.LaunchRate and
// LaunchBurst: EC2's own bucket for the call is 5, refilled at 2 a second),
// waiting rather than failing. AWS's error codes become backend.Error kinds
// (see classify); the secret key appears in no error, log line or
// formatted value.
package aws
