#!/usr/bin/env bash
# local-image.sh builds the local backend's runner image,
# dstack-local-runner:<hash>, and prints its reference: FROM scratch with the
# static dstack-runner (default bin/dstack-runner, `make build`) and a static
# busybox for a shell. No registry is needed.
#
#   scripts/local-image.sh [RUNNER_BINARY]
#
# It is idempotent: Debian's busybox-static is installed (apt-get, as root or
# through sudo -n) only when /bin/busybox is missing, and an image of the
# same binary is reused. The server builds the same image at start through
# the engine's API (local.BuildImage); this script is for doing it ahead.
set -euo pipefail
cd "$(dirname "$0")/.."

runner_bin=${1:-bin/dstack-runner}
log() { echo "local-image.sh: $*" >&2; }

if [ ! -e /bin/busybox ] && [ ! -e /usr/bin/busybox ]; then
	if ! command -v apt-get >/dev/null; then
		log "no busybox and no apt-get: install a static busybox at /bin/busybox"
		exit 1
	fi
	log "no busybox: installing busybox-static"
	sudo=
	if [ "$(id -u)" != 0 ]; then
		sudo="sudo -n"
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get install -y busybox-static >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y busybox-static >&2; }
fi
if [ ! -x "$runner_bin" ]; then
	log "no runner binary at $runner_bin: run \`make build\` first"
	exit 1
fi
exec "${GO:-go}" run ./cmd/dstack-local-image -runner "$runner_bin"
