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
#   kube-apiserver, kube-scheduler, kube-controller-manager
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
	for f in kube-apiserver kube-scheduler kube-controller-manager etcd kwok; do
		[ -x "$bin/$f" ] || return 1
	done
}

if have_all; then
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

if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kube-scheduler" ] || [ ! -x "$bin/kube-controller-manager" ]; then
	log "building kube-apiserver, kube-scheduler and kube-controller-manager $KUBE_VERSION (slow the first time)"
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
	build "$mod" "$work/out-kube" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager
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

have_all || { log "some binaries are still missing from $bin"; exit 1; }
log "binaries in $bin ($(du -sh "$bin" | cut -f1))"
echo "$bin"
