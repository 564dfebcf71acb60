// Package version holds the build's version, set by the linker. The CLI,
// the server and the runner all read it: `dstack version` prints it, the
// server reports it at /api/v1/version and /healthz, and the runner reports
// it when it registers, so that the server can warn of a runner built from
// another version.
package version

// Version is set with -ldflags "-X github.com/dstackai/dstack/version.Version=..."
// (`make build` sets it from `git describe`); "dev" is an unstamped build.
var Version = "dev"
