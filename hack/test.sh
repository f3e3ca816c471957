#!/usr/bin/env bash
# `make test`: every suite, with the slow ones overlapped, and the phase times at the end.
#
#   hack/test.sh                 # what `make test` runs
#   TEST_LANES=1 hack/test.sh    # every suite one after another (to read a suite's own time)
#
# Why lanes: most of the slow suites' time is spent waiting on real processes (control planes
# starting, kubelets pulling, vLLM loading a model), not computing, so two lanes on two cores
# finish well before the sum of their suites. The order:
#   1. lint, types, import layers, unit: alone, so that a lint error does not wait for twenty
#      minutes of clusters; the inference venv (pip unpacking torch and vLLM: I/O, not tests)
#      builds in the background meanwhile;
#   2. the assets (kubelet, helm, ...), which both lanes need, once;
#   3. two lanes of about equal length:
#        integration, then some --small benchmarks
#        reliability, e2e, inference, tuning, then the other --small benchmarks
#      A lane waits for the inference venv only before its first suite that needs it.
# The --small benchmarks are smoke tests (bench/_smoke.py asserts figures from every side, no
# targets), so running them beside a suite costs no assertion. Each suite writes its own log,
# printed whole when it ends, so a CI log reads suite by suite rather than interleaved.
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

summary() {
  echo
  echo "== make test: phase times (s) =="
  printf '%-28s %8s %4s\n' PHASE SECONDS RC
  for f in "$LOGS"/*.time; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .time)
    printf '%-28s %8s %4s\n' "$n" "$(cat "$f")" "$(cat "$LOGS/$n.rc")"
  done
  echo "total wall: $(( $(date +%s) - START )) s (lanes: $LANES)"
}

VENV_PID=
fail() {
  # the background venv build must not outlive us (nor print into a later job's log)
  [ -n "$VENV_PID" ] && kill -- -"$VENV_PID" 2>/dev/null
  summary; echo "make test: FAILED ($*)"; exit 1
}

venv_ready() {  # lane step: wait until the background inference-venv build has ended; its rc
  while [ ! -e "$LOGS/inference-venv.rc" ]; do sleep 2; done
  return "$(cat "$LOGS/inference-venv.rc")"
}

lane() {  # lane STEP...: suites in order; a failed suite does not stop the lane (all results
  # count), but a failed venv build ends it: every later step would rebuild the venv itself
  local rc=0
  for s in "$@"; do
    if [ "$s" = venv ]; then venv_ready || return 1; continue; fi
    run "$s" || rc=1
  done
  return "$rc"
}

# 1. the inference venv in the background (its own session, so fail() can stop all of it),
#    the fast checks in front
export -f run
export LOGS
setsid bash -c 'run inference-venv' </dev/null & VENV_PID=$!
for s in lint typecheck layers unit; do run "$s" || fail "$s"; done
# 2. what both lanes need, built once before they start (two lanes must not both build it)
run assets || fail assets
# 3. the slow suites, and the benchmarks' smoke runs spread so that the lanes end together
# (seconds in the fresh-clone run of 2026-12-07 22:31 UTC: integration 1,063, reliability 494,
# inference 208, tuning 195, e2e 183; smoke runs inference 110, provisioning 45, tuning 39,
# workspace 26, runtime 26, informer_scale 17, weights 6, dataset_loader 5: lane A 1,183,
# lane B 1,234)
LANE_A=(venv integration bench-small-provisioning bench-small-informer_scale bench-small-workspace
        bench-small-weights bench-small-runtime)
LANE_B=(reliability e2e venv inference tuning bench-small-tuning bench-small-inference
        bench-small-dataset_loader)
if [ "$LANES" -ge 2 ]; then
  lane "${LANE_A[@]}" & a=$!
  lane "${LANE_B[@]}" & b=$!
  rc=0
  wait "$a" || rc=1
  wait "$b" || rc=1
else
  rc=0
  lane "${LANE_A[@]}" "${LANE_B[@]}" || rc=1
fi
wait "$VENV_PID" 2>/dev/null
# every benchmark in bench/ must be in a lane (a new one would otherwise never run in CI)
for b in bench/*.py; do
  n=$(basename "$b" .py)
  case $n in _*|plot) continue;; esac
  [[ " ${LANE_A[*]} ${LANE_B[*]} " == *" bench-small-$n "* ]] || { echo "hack/test.sh: bench/$n.py is in no lane"; rc=1; }
done
[ "$rc" = 0 ] || fail "a suite failed: see its rc above"
summary
echo "make test: OK"
