#!/usr/bin/env bash
# make demo: a dstack server on its embedded defaults (SQLite, local files), a
# local runner, and the quickstart example's workflows run end to end. Nothing
# outside .demo/ is touched: the CLI is pointed at the demo server through
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

pids=()
cleanup() {
  status=$?
  step "Stopping the runner and the server"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "Stopped. State, logs and artifacts are in .demo/"
  exit $status
}
trap cleanup EXIT

step "Starting: dstack server --data-dir .demo/server"
"$bin/dstack" server --port "$port" --data-dir "$demo/server" --no-cli-config --log-level warn > "$demo/server.out" 2>&1 &
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
pids+=($!)
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
