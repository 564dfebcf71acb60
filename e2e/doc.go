// Package e2e holds the end-to-end tests of dstack: they build the real
// `dstack` and `dstack-runner` binaries, start a server and runners as
// subprocesses on loopback, and drive them with the CLI as a user would,
// asserting what a user notices (output, exit codes, files). Every scenario
// runs on SQLite and on PostgreSQL (the latter when DSTACK_TEST_POSTGRES_DSN
// is set, as `make test` does).
//
// TestMain builds the binaries once with the go on PATH; `go test -short`
// skips the package. A failing test shows the output of every process it
// started (DSTACK_TEST_VERBOSE=1: every test). The package has no code of
// its own: harness_test.go is the harness, the other files the scenarios.
//
// The web UI's scenarios (ui_test.go) drive Debian's Chromium, headless, with
// chromedp (browser_test.go): scripts/chromium.sh installs it, and without it
// they fail saying so. They save a screenshot of each page they visit in
// build/screenshots/ at the repository's root.
//
// The high-availability scenario (ha_test.go) runs three servers on one
// PostgreSQL database and one S3 bucket behind Debian's nginx, which
// scripts/nginx.sh installs (without it the scenario fails under CI and is
// skipped elsewhere), and kills one; DSTACK_E2E_HA_FULL=1 runs it with
// 1,000 simulated runners and 5,000 jobs instead of 50 and 300.
//
// The multi-host scenarios (multihost_test.go, with dockerhost_test.go for
// their harness) run the server and each runner in a container of its own
// on a Docker network, to cut a runner off the network or kill it; they
// skip without a Docker engine, and fail then under CI.
//
// The Kubernetes runner Pod scenarios (kubernetes_pod_test.go) run a real
// API server, scheduler and controller manager with kwok nodes
// (internal/kubetest, binaries from scripts/kube.sh) and play the nodes'
// kubelet with the Docker engine: each runner Pod's container is run as
// podToDocker (kubelet_test.go) translates its spec, refusing any field it
// does not know. They skip without a Docker engine (failing under CI) and
// fail without the binaries.
package e2e
