// Package bench holds dstack's load tools and side-by-side benchmarks. It is
// a Go module of its own, so that what it compares dstack with stays out of
// the product's go.mod; `make bench` runs it.
package bench
