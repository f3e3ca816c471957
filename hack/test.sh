#!/usr/bin/env bash
# `make test`: every suite, with the slow ones overlapped, and the phase times at the end.
#
#   hack/test.sh                 # what `make test` runs
#   TEST_LANES=1 hack/test.sh    # every suite one after another (to read a suite's own time)
#
# Why lanes: most of the slow suites' time is spent waiting on real processes (control planes
# starting, kubelets pulling, vLLM loading a model), not computing, so two lanes on two cores
# finish well before the sum of their suites. The lanes are:
#   integration                                  (real control planes, real nodes, the agent)
#   reliability, e2e, inference, tuning          (faults, the in-cluster install, vLLM, peft)
# Checks that must fail fast (lint, types, import layers, unit) run first, alone; the `--small`
# benchmarks run last, alone, because they time things. Each suite writes its own log, printed
# whole when the suite ends, so a CI log reads suite by suite rather than interleaved.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${TEST_LOGS:-.kaito/test-logs}
LANES=${TEST_LANES:-2}
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.time "$LOGS"/*.rc
START=$(date +%s)

run() {  # run NAME: `make NAME` into its log; its seconds and exit code beside it
  local name=$1 t0 rc
  t0=$(date +%s)
  make --no-print-directory "$name" >"$LOGS/$name.log" 2>&1
  rc=$?
  echo $(( $(date +%s) - t0 )) >"$LOGS/$name.time"
  echo "$rc" >"$LOGS/$name.rc"
  {
    echo "==================== $name: rc=$rc in $(cat "$LOGS/$name.time") s ===================="
    cat "$LOGS/$name.log"
  } | (flock 9; cat) 9>"$LOGS/.print.lock"
  return "$rc"
}

lane() {  # lane NAME...: suites in order; a failed suite does not stop the lane (all results count)
  local rc=0
  for s in "$@"; do run "$s" || rc=1; done
  return "$rc"
}

summary() {
  echo
  echo "== make test: phase times (s) =="
  printf '%-16s %8s %4s\n' PHASE SECONDS RC
  for f in "$LOGS"/*.time; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .time)
    printf '%-16s %8s %4s\n' "$n" "$(cat "$f")" "$(cat "$LOGS/$n.rc")"
  done
  echo "total wall: $(( $(date +%s) - START )) s (lanes: $LANES)"
}

fail() { summary; echo "make test: FAILED ($*)"; exit 1; }

# 1. fast checks, alone: a lint error should not wait for twenty minutes of clusters
for s in lint typecheck layers unit; do run "$s" || fail "$s"; done
# 2. what the lanes need, built once before they start (two lanes must not both build it)
for s in assets inference-venv; do run "$s" || fail "$s"; done
# 3. the slow suites
if [ "$LANES" -ge 2 ]; then
  lane integration & a=$!
  lane reliability e2e inference tuning & b=$!
  rc=0
  wait "$a" || rc=1
  wait "$b" || rc=1
else
  rc=0
  lane integration reliability e2e inference tuning || rc=1
fi
[ "$rc" = 0 ] || fail "a suite failed: see its rc above"
# 4. smoke runs of the benchmarks, alone (they time things)
run bench-small || fail bench-small
summary
echo "make test: OK"
