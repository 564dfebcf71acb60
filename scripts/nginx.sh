#!/usr/bin/env bash
# nginx.sh makes sure Debian's nginx is installed, for the high-availability
# end-to-end test (e2e/ha_test.go), which puts it in front of several
# `dstack server` replicas as their load balancer.
#
#   scripts/nginx.sh
#
# It is idempotent: it installs nginx-light (or, where the distribution has
# no such package, nginx) with apt-get, as root or through sudo -n, after an
# apt-get update, only when no nginx binary is there. It prints the binary's
# path as the last line on stdout. It neither starts nginx nor enables its
# service: the test runs its own nginx, as an unprivileged process on a
# loopback port, with a configuration it writes (see docs/operations.md).
# NGINX names another nginx binary to use instead; the test reads the same
# variable.
set -euo pipefail

log() { echo "nginx.sh: $*" >&2; }

find_nginx() {
	if [ -n "${NGINX:-}" ]; then
		echo "$NGINX"
	elif [ -x /usr/sbin/nginx ]; then
		echo /usr/sbin/nginx
	else
		command -v nginx || true
	fi
}

bin=$(find_nginx)
if [ -n "$bin" ] && [ -x "$bin" ]; then
	log "nginx: $bin"
	echo "$bin"
	exit 0
fi
if [ -n "${NGINX:-}" ]; then
	log "NGINX=$NGINX is not an executable"
	exit 1
fi
if ! command -v apt-get >/dev/null; then
	log "no apt-get here: install nginx and set NGINX to its path"
	exit 1
fi
sudo=
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
		log "installing nginx needs root: run this as root, or allow sudo without a password"
		exit 1
	fi
	sudo="sudo -n"
fi
log "no nginx found: installing it"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update >&2
# The package's service must not start on install (it would take port 80):
# policy-rc.d refuses it for the length of the install.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
	$sudo chmod 755 "$policy"
	made_policy=1
fi
status=0
$sudo apt-get install -y --no-install-recommends nginx-light >&2 ||
	$sudo apt-get install -y --no-install-recommends nginx >&2 || status=$?
if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
if [ "$status" != 0 ]; then
	log "apt-get could not install nginx-light nor nginx"
	exit 1
fi
bin=$(find_nginx)
[ -n "$bin" ] && [ -x "$bin" ] || { log "nginx is installed, but no nginx binary is on PATH or at /usr/sbin/nginx"; exit 1; }
log "nginx: $bin"
echo "$bin"
