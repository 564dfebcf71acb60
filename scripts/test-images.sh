#!/usr/bin/env bash
# test-images.sh builds the images the Docker executor's tests run, without a
# registry: dstack-test/busybox:latest is FROM scratch with a static busybox
# as /bin/busybox, its applets linked next to it (/bin/sh among them) and a
# /tmp.
#
#   scripts/test-images.sh                 # install busybox-static if needed, build
#   scripts/test-images.sh --install-only  # only make sure a static busybox is there
#
# It is idempotent: it installs Debian's busybox-static (with apt-get, as root
# or through sudo -n) only when no static busybox is found, and the build is
# cached by the engine. BUSYBOX names another static busybox to use. The
# tests build the same image through the engine's API (package
# executor/executortest), calling this script only to install busybox.
set -euo pipefail

image=${DSTACK_TEST_IMAGE:-dstack-test/busybox:latest}

log() { echo "test-images.sh: $*" >&2; }

# is_static FILE: FILE is an ELF executable without a dynamic loader.
is_static() {
	[ -x "$1" ] || return 1
	# A dynamic executable names its loader (PT_INTERP) in its header.
	! grep -qaE 'ld-linux|ld-musl' < <(head -c 4096 "$1")
}

find_busybox() {
	for b in "${BUSYBOX:-}" /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
		if [ -n "$b" ] && is_static "$b"; then
			echo "$b"
			return 0
		fi
	done
	return 1
}

if ! bb=$(find_busybox); then
	log "no static busybox: installing busybox-static"
	sudo=
	if [ "$(id -u)" != 0 ]; then
		sudo="sudo -n"
	fi
	if ! command -v apt-get >/dev/null; then
		log "no apt-get here: install a static busybox and set BUSYBOX to its path"
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get install -y busybox-static >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y busybox-static >&2; }
	bb=$(find_busybox) || { log "busybox-static installed, but no static busybox found"; exit 1; }
fi
log "static busybox: $bb"
if [ "${1:-}" = "--install-only" ]; then
	exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
cp "$bb" "$ctx/rootfs/bin/busybox"
for applet in $("$bb" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
done
printf 'FROM scratch\nCOPY rootfs /\nLABEL ai.dstack.test=busybox\n' >"$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >&2
log "built $image"
