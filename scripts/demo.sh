#!/usr/bin/env bash
# make demo: a dstack server on its embedded defaults (SQLite, local files), a
# local runner, and the quickstart example's workflows run end to end; then,
# with a Docker engine, the same workflows on an on-demand instance (a
# container of the local backend) that the server launches within a limit and
# terminates once idle. Nothing outside .demo/ (and the demo's containers) is
# touched: the CLI is pointed at the demo server through
# DSTACK_SERVER and DSTACK_TOKEN, not ~/.dstack/config.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/bin
demo=$root/.demo
rm -rf "$demo"
mkdir -p "$demo"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

port=${DSTACK_DEMO_PORT:-0} # 0: any free port

# On-demand runners run as containers on the local Docker engine; they reach
# the server through the Docker bridge's gateway, so the server listens there.
host=127.0.0.1
ondemand=""
if docker info >/dev/null 2>&1; then
  gw=$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1)
  if [ -n "$gw" ]; then
    host=$gw
    ondemand=1
    step "Building the local backend's runner image (make local-image)"
    make --no-print-directory local-image >/dev/null
  fi
fi
[ -n "$ondemand" ] || echo "(no Docker engine: the on-demand part of the demo is skipped)"

pids=()
cleanup() {
  status=$?
  if [ -n "$ondemand" ] && [ -n "${DSTACK_TOKEN:-}" ]; then
    # Limits gone: the server terminates every instance it launched.
    "$bin/dstack" on-demand limits --delete-all -f >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      [ -z "$(docker ps -aq --filter "label=dstack:backend=local" --filter "label=dstack:server-id=${server_id:-none}")" ] && break
      sleep 0.2
    done
  fi
  step "Stopping the runner and the server"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "Stopped. State, logs and artifacts are in .demo/"
  exit $status
}
trap cleanup EXIT

step "Starting: dstack server --data-dir .demo/server"
"$bin/dstack" server --host "$host" --port "$port" --data-dir "$demo/server" --no-cli-config --log-level warn \
  --idle-timeout 10s > "$demo/server.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q 'admin token is' "$demo/server.out" 2>/dev/null && break
  sleep 0.1
done
cat "$demo/server.out"
token=$(sed -n 's/^The admin token is \([^ ]*\).*/\1/p' "$demo/server.out")
url=$(sed -n 's/^The dstack server is running at \([^ ]*\).*/\1/p' "$demo/server.out")
[ -n "$token" ] && [ -n "$url" ] || { echo "the server did not start"; exit 1; }
export DSTACK_SERVER=$url DSTACK_TOKEN=$token

step "Starting a runner: dstack-runner config --token ... && dstack-runner start"
export DSTACK_RUNNER_CONFIG=$demo/runner/config.yaml
"$bin/dstack-runner" config --server "$DSTACK_SERVER" --token "$token" --data-dir "$demo/runner"
"$bin/dstack-runner" start > "$demo/runner.out" 2>&1 &
runner_pid=$!
pids+=($runner_pid)
for _ in $(seq 1 100); do
  "$bin/dstack" runners 2>/dev/null | grep -q online && break
  sleep 0.1
done
"$bin/dstack" runners

step "Running the example: cd examples/quickstart && dstack run train --epochs 3"
cd "$root/examples/quickstart"
"$bin/dstack" run train --epochs 3
run=$("$bin/dstack" ps -a --json | grep -o '"name": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')

step "dstack ps -a"
"$bin/dstack" ps -a

step "dstack artifacts list $run"
"$bin/dstack" artifacts list "$run"

step "dstack artifacts download $run -o .demo/artifacts"
"$bin/dstack" artifacts download "$run" -o "$demo/artifacts"
find "$demo/artifacts" -type f | sed "s|$root/||" | sort
echo "model/weights.txt: $(cat "$demo"/artifacts/train/model/weights.txt)"

step "dstack logs $run --since 1h (replayed from the server)"
"$bin/dstack" logs "$run" --since 1h | tail -n 3

[ -n "$ondemand" ] || exit 0

step "On-demand runners: the self-hosted runner stops (and says so), a limit lets the server launch instances"
kill -TERM "$runner_pid" && wait "$runner_pid" 2>/dev/null || true
"$bin/dstack" on-demand limit -i local.small -m 1
"$bin/dstack" on-demand limits

step "dstack run train --epochs 1: no runner is free, so the server launches a local.small instance"
"$bin/dstack" run train --epochs 1
"$bin/dstack" runners
server_id=$(docker ps -a --filter "label=dstack:backend=local" --format '{{.Label "dstack:server-id"}}' | head -n 1)

step "The instance is idle: it is terminated after --idle-timeout 10s"
for _ in $(seq 1 150); do
  [ -z "$(docker ps -aq --filter "label=dstack:server-id=$server_id")" ] && break
  sleep 0.2
done
"$bin/dstack" runners
echo "Containers of this server left: $(docker ps -aq --filter "label=dstack:server-id=$server_id" | wc -l)"
