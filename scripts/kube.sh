#!/usr/bin/env bash
# kube.sh builds the pieces of the throwaway Kubernetes cluster the Kubernetes
# backend's tests run against (internal/kubetest), and prints the folder that
# holds them.
#
#   scripts/kube.sh          # progress on stderr; the bin folder on the last line
#   DSTACK_KUBE_BIN=$(scripts/kube.sh | tail -n 1)
#
# It is idempotent: it builds, with the Go toolchain from the Go module proxy
# only, whichever of these is missing under
# ${XDG_CACHE_HOME:-$HOME/.cache}/dstack/kube/<versions>/bin:
#
#   kube-apiserver, kube-scheduler, kube-controller-manager, kubelet
#       k8s.io/kubernetes $KUBE_VERSION. Its go.mod points the k8s.io/*
#       staging modules at ./staging, which a module download lacks, so they
#       are built from a throwaway module that requires k8s.io/kubernetes and
#       replaces every staging module by its published v0.x twin.
#   etcd
#       go.etcd.io/etcd/server/v3 $ETCD_VERSION (Debian's etcd-server is 3.4,
#       older than the 3.5 Kubernetes 1.37 supports), from a throwaway module
#       too: the module's go.mod replaces its siblings by relative paths.
#   kwok
#       sigs.k8s.io/kwok/cmd/kwok $KWOK_VERSION, which plays the kubelet of
#       fake nodes.
#   pause
#       the process that holds a Pod sandbox's namespaces on a real kubelet
#       node (internal/kubetest makes its image FROM scratch: no registry).
#
# A real kubelet node also needs containerd, runc and the CNI plugins, which
# Debian packages: as root, it installs containerd and
# containernetworking-plugins with apt-get when they are missing (their
# services are not started).
#
# The first run takes a while (about 15 minutes on two cores, most of it
# kube-apiserver); later runs only check the files. Nothing is written into
# the repository. GO names the go command to use.
set -euo pipefail

KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.4
KWOK_VERSION=v0.8.0

GO=${GO:-go}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dstack/kube/$KUBE_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION
bin=$cache/bin

log() { echo "kube.sh: $*" >&2; }

have_all() {
	local f
	for f in kube-apiserver kube-scheduler kube-controller-manager kubelet etcd kwok pause; do
		[ -x "$bin/$f" ] || return 1
	done
}

have_debs() {
	command -v containerd >/dev/null && command -v runc >/dev/null &&
		{ [ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ]; }
}

install_debs() {
	have_debs && return 0
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		log "containerd, runc or the CNI plugins are missing: the real-kubelet tests will be skipped (install containerd and containernetworking-plugins to run them)"
		return 0
	fi
	log "installing containerd and containernetworking-plugins"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update >&2
	local policy=/usr/sbin/policy-rc.d made=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made=1
	fi
	local status=0
	apt-get install -y --no-install-recommends containerd containernetworking-plugins >&2 || status=$?
	if [ -n "$made" ]; then rm -f "$policy"; fi
	if [ "$status" != 0 ]; then log "apt-get could not install containerd and containernetworking-plugins"; fi
}

if have_all; then
	install_debs
	echo "$bin"
	exit 0
fi

mkdir -p "$bin"
# Two runs at once must not both build: the second waits for the first.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache.lock"
	flock 9
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dstack-kube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

export CGO_ENABLED=0 GOFLAGS=-trimpath GOWORK=off
build_flags=(-ldflags '-s -w')

# build DIR OUT PKG... builds the main packages into OUT, then moves them into
# the cache, so that a half-built binary is never taken for a whole one.
build() {
	local dir=$1 out=$2
	shift 2
	mkdir -p "$out"
	(cd "$dir" && "$GO" build "${build_flags[@]}" -o "$out/" "$@") >&2
	local f
	for f in "$out"/*; do
		mv -f "$f" "$bin/"
	done
}

if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kube-scheduler" ] || [ ! -x "$bin/kube-controller-manager" ] || [ ! -x "$bin/kubelet" ]; then
	log "building kube-apiserver, kube-scheduler, kube-controller-manager and kubelet $KUBE_VERSION (slow the first time)"
	start=$SECONDS
	mod=$work/kubernetes
	mkdir -p "$mod"
	kmod=$(cd "$mod" && "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -s "$kmod" ] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"; exit 1; }
	goline=$(grep -m1 '^go ' "$kmod")
	{
		echo "module dstack.local/kubebuild"
		echo
		echo "$goline"
		grep -m1 '^godebug ' "$kmod" || true
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "replace ("
		# Every k8s.io/* module kubernetes takes from ./staging, but the
		# sample ones, which nothing here imports.
		grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" | awk '{print $1}' | grep -v '^k8s.io/sample-' |
			while read -r m; do echo "	$m => $m $STAGING_VERSION"; done
		echo ")"
	} >"$mod/go.mod"
	cat >"$mod/tools.go" <<-'EOF'
		//go:build tools

		package kubebuild

		import (
			_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
			_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
			_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
			_ "k8s.io/kubernetes/cmd/kubelet/app"
		)
	EOF
	(cd "$mod" && "$GO" mod tidy) >&2
	# The version the API server reports at /version, as Kubernetes' own
	# build sets it.
	minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	kv=
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		kv="$kv -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	build_flags=(-ldflags "-s -w$kv")
	build "$mod" "$work/out-kube" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubelet
	build_flags=(-ldflags '-s -w')
	log "built them in $((SECONDS - start))s"
fi

if [ ! -x "$bin/etcd" ]; then
	log "building etcd $ETCD_VERSION"
	start=$SECONDS
	mod=$work/etcd
	mkdir -p "$mod"
	printf 'module dstack.local/etcdbuild\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$mod/go.mod"
	printf '//go:build tools\n\npackage etcdbuild\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' >"$mod/tools.go"
	(cd "$mod" && "$GO" mod tidy) >&2
	(cd "$mod" && "$GO" build "${build_flags[@]}" -o "$work/etcd.bin" go.etcd.io/etcd/server/v3) >&2
	mv -f "$work/etcd.bin" "$bin/etcd"
	log "built it in $((SECONDS - start))s"
fi

if [ ! -x "$bin/kwok" ]; then
	log "building kwok $KWOK_VERSION"
	start=$SECONDS
	mkdir -p "$work/out-kwok"
	GOBIN=$work/out-kwok "$GO" install "${build_flags[@]}" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
	mv -f "$work/out-kwok/kwok" "$bin/kwok"
	log "built it in $((SECONDS - start))s"
fi

if [ ! -x "$bin/pause" ]; then
	log "building pause"
	mod=$work/pause
	mkdir -p "$mod"
	printf 'module dstack.local/pause\n\ngo 1.26.0\n' >"$mod/go.mod"
	cat >"$mod/main.go" <<-'EOF'
		// pause holds a Pod sandbox's namespaces until it is told to stop.
		package main

		import (
			"os"
			"os/signal"
			"syscall"
		)

		func main() {
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
			<-c
		}
	EOF
	(cd "$mod" && "$GO" build "${build_flags[@]}" -o "$work/pause.bin" .) >&2
	mv -f "$work/pause.bin" "$bin/pause"
fi

install_debs

have_all || { log "some binaries are still missing from $bin"; exit 1; }
log "binaries in $bin ($(du -sh "$bin" | cut -f1))"
echo "$bin"
