#!/usr/bin/env bash
# chromium.sh makes sure Debian's Chromium is installed at /usr/bin/chromium
# for the web UI's browser tests (e2e/ui_test.go, driven with chromedp).
#
#   scripts/chromium.sh
#
# It is idempotent: it installs the chromium package with apt-get (as root,
# or through sudo -n), after an apt-get update, only when no Chromium is
# there. CHROMIUM names another Chromium or Chrome binary to use instead;
# the tests read the same variable.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

bin=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$bin" ]; then
	log "Chromium: $bin"
	exit 0
fi
if [ -n "${CHROMIUM:-}" ]; then
	log "CHROMIUM=$CHROMIUM is not an executable"
	exit 1
fi
if ! command -v apt-get >/dev/null; then
	log "no apt-get here: install Chromium (or Chrome) and set CHROMIUM to its path"
	exit 1
fi
sudo=
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
		log "installing Chromium needs root: run this as root, or allow sudo without a password"
		exit 1
	fi
	sudo="sudo -n"
fi
log "no Chromium at $bin: installing the chromium package"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update >&2
$sudo apt-get install -y chromium >&2
[ -x "$bin" ] || { log "the chromium package is installed, but $bin is not there"; exit 1; }
log "Chromium: $bin"
