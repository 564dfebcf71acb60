// Package version holds the build's version, set by the linker.
package version

// Version is set with -ldflags "-X github.com/dstackai/dstack/version.Version=...".
var Version = "dev"
