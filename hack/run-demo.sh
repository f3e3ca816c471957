#!/usr/bin/env bash
# The `make run` story on the local cluster (already started by `kaito local up`): kaito's CRDs,
# the kaito controller in the background with the default gpu-provisioner backend and kaito's own
# node-provisioner in the same process (kwok cloud), the README's inference Workspaces applied
# unchanged with no nodes present, so each gets a NodeClaim and a Node made on demand; a progress
# display until WORKSPACEREADY is True, then the real kubectl tables and (make run) a real
# POST /chat answered by the seed's pod, which kaito's local node agent runs.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_START=${KAITO_RUN_START:-$(date +%s)}
STATE=${1:-.kaito/local}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
state() { "$PY" -c "import json,sys;print(json.load(open('$STATE/state.json'))$1)"; }
KUBECONFIG=$(state "['kubeconfig']")
KUBECTL=$(state "['kubectl']")
APISERVER_PID=$(state "['pids']['kube-apiserver']")
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
shopt -s nullglob

crds=(config/crd/*.yaml)
echo "== installing CRDs"
for f in "${crds[@]}"; do
  [ "$(basename "$f")" = kustomization.yaml ] || k apply --server-side --force-conflicts -f "$f"
done
k wait --for=condition=Established crd --all --timeout=60s >/dev/null

# KAITO_DEMO_CHAT=1 (make run) with the node agent running: the seed's node is a kaito local
# node, so its pod runs kaito.inference for real and the run ends with a real POST /chat. The kwok
# cloud decides per NodeClaim with a label selector over the node's labels (--local-nodes): the
# seed's Workspace selects apps=phi-3; the adapter example's image (ACR_REPO_HERE) cannot be
# pulled anywhere, so its node stays a kwok fake.
AGENT_PID=$(state "['pids'].get('node-agent', 0)")
LOCAL_NODE=0
LOCAL_ARGS=()
if [ "${KAITO_DEMO_CHAT:-0}" = 1 ] && [ "$AGENT_PID" != 0 ]; then
  LOCAL_NODE=1
  LOCAL_ARGS=(--local-nodes "apps=phi-3")
fi

echo "== starting the kaito controller: gpu-provisioner backend + kaito's node-provisioner (kwok cloud)"
echo "   logs: $STATE/controller.log"
if [ -f "$STATE/controller.pid" ] && kill -0 "$(cat "$STATE/controller.pid")" 2>/dev/null; then
  kill "$(cat "$STATE/controller.pid")" 2>/dev/null || true
  while kill -0 "$(cat "$STATE/controller.pid")" 2>/dev/null; do sleep 0.2; done
fi
PROBE_PORT=$("$PY" -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
nohup "$PY" -m kaito.cli.main controller --kubeconfig "$KUBECONFIG" \
  --node-provisioner gpu-provisioner --node-provisioner-cloud kwok "${LOCAL_ARGS[@]}" \
  --metrics-bind-address 0 --health-probe-bind-address "127.0.0.1:$PROBE_PORT" \
  >"$STATE/controller.log" 2>&1 </dev/null &
CTRL=$!
echo "$CTRL" >"$STATE/controller.pid"
# The controller goes with the cluster: `kaito local down` alone also ends it.
nohup bash -c "while kill -0 $APISERVER_PID 2>/dev/null && kill -0 $CTRL 2>/dev/null; do sleep 2; done; kill $CTRL 2>/dev/null" \
  >/dev/null 2>&1 </dev/null &
for _ in $(seq 1 120); do
  if "$PY" -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:$PROBE_PORT/readyz',timeout=2)" \
    >/dev/null 2>&1; then break; fi
  kill -0 "$CTRL" 2>/dev/null || { echo "controller exited:"; tail -20 "$STATE/controller.log"; exit 1; }
  sleep 0.5
done

echo "== nodes before the Workspaces (none on a fresh cluster: they are made on demand)"
k get nodes 2>&1 | sed 's/^/   /'
if [ "$LOCAL_NODE" = 1 ]; then
  echo "   claims matching apps=phi-3 get a kaito local node (kaito.sh/node-agent=local): its pod runs for real"
fi

echo "== applying the README's inference Workspaces unchanged (examples/inference/)"
k apply -f examples/inference/
# The README's tuning examples share those names, so they go to their own namespace.
k create namespace kaito-tuning --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -n kaito-tuning -f examples/tuning/

echo "== waiting for WORKSPACEREADY (NodeClaim -> Node -> Ready -> inference)"
cols='{range .items[*]}{.metadata.name}{" "}{.status.state}{" "}{.status.conditions[?(@.type=="ResourceReady")].status}{" "}{.status.conditions[?(@.type=="InferenceReady")].status}{" "}{.status.conditions[?(@.type=="WorkspaceReady")].status}{"\n"}{end}'
claim_cols='{range .items[*]}{.metadata.name}{" "}{.metadata.labels.kaito\.sh/workspace}{" "}{.status.conditions[?(@.type=="Launched")].status}{" "}{.status.conditions[?(@.type=="Registered")].status}{" "}{.status.conditions[?(@.type=="Ready")].status}{" "}{.status.nodeName}{"\n"}{end}'
start=$(date +%s)
last=""
last_claims=""
while :; do
  claims=$(k get nodeclaims.karpenter.sh -l kaito.sh/workspacenamespace=default -o jsonpath="$claim_cols" 2>/dev/null || true)
  if [ "$claims" != "$last_claims" ]; then
    printf '%s\n' "$claims" | while read -r name ws launched registered ready node; do
      [ -n "$name" ] || continue
      printf '  nodeclaim %-13s for %-28s launched=%-5s registered=%-5s ready=%-5s node=%s (%ss)\n' \
        "$name" "$ws" "${launched:--}" "${registered:--}" "${ready:--}" "${node:--}" "$(( $(date +%s) - start ))"
    done
    last_claims=$claims
  fi
  now=$(k get workspace -n default -o jsonpath="$cols")
  if [ "$now" != "$last" ]; then
    printf '%s\n' "$now" | while read -r name st rr ir wr; do
      printf '  %-31s state=%-8s resource=%-5s inference=%-5s ready=%-5s (%ss)\n' \
        "$name:" "${st:--}" "${rr:--}" "${ir:--}" "${wr:--}" "$(( $(date +%s) - start ))"
    done
    last=$now
  fi
  total=$(printf '%s\n' "$now" | grep -c . || true)
  ready=$(printf '%s\n' "$now" | awk '$5=="True"' | grep -c . || true)
  if [ "$total" -gt 0 ] && [ "$ready" -eq "$total" ]; then break; fi
  # a real vLLM start on a few CPU cores compiles for minutes the first time (cached later)
  limit=180; [ "$LOCAL_NODE" = 1 ] && limit=1200
  if [ $(( $(date +%s) - start )) -gt $limit ]; then
    echo "not Ready after $limit s; controller log:"; tail -30 "$STATE/controller.log"; exit 1
  fi
  kill -0 "$CTRL" 2>/dev/null || { echo "controller exited:"; tail -30 "$STATE/controller.log"; exit 1; }
  sleep 1
done

echo "== kubectl get nodeclaims"
k get nodeclaims.karpenter.sh
echo "== kubectl get nodes -L kaito.sh/node-agent,kaito.sh/workspacenamespace,kaito.sh/workspace"
k get nodes -L kaito.sh/node-agent,kaito.sh/workspacenamespace,kaito.sh/workspace
echo "== kubectl get workspace"
k get workspace
echo "== kubectl get svc"
k get svc
echo "== kubectl get workspace -A"
k get workspace -A
echo
if [ "$LOCAL_NODE" = 1 ]; then
  PORT=$("$PY" -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
  echo "== kaito local port-forward svc/workspace-phi-3-mini $PORT:80"
  nohup "$PY" -m kaito.cli.main local port-forward svc/workspace-phi-3-mini "$PORT:80" --state-dir "$STATE" \
    >"$STATE/port-forward.log" 2>&1 </dev/null &
  echo $! >"$STATE/port-forward.pid"
  nohup bash -c "while kill -0 $APISERVER_PID 2>/dev/null; do sleep 2; done; kill $! 2>/dev/null" >/dev/null 2>&1 </dev/null &
  for _ in $(seq 1 60); do grep -q Forwarding "$STATE/port-forward.log" 2>/dev/null && break; sleep 0.5; done
  BODY='{"prompt": "What is Kubernetes?", "generate_kwargs": {"max_length": 48}}'
  echo "== curl -X POST http://127.0.0.1:$PORT/chat -d '$BODY'"
  curl -sS -X POST "http://127.0.0.1:$PORT/chat" -H 'Content-Type: application/json' -d "$BODY"; echo
  echo "first answer $(( $(date +%s) - RUN_START )) s after make run started"
  curl -sS "http://127.0.0.1:$PORT/health"; echo
  echo "node agent RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$AGENT_PID/status)"
  echo
  echo "ask your own question:"
  echo "  curl -X POST http://127.0.0.1:$PORT/chat -H 'Content-Type: application/json' -d '{\"prompt\": \"YOUR QUESTION\"}'"
fi
echo "kaito is running (controller + node-provisioner pid $CTRL, log $STATE/controller.log)."
echo "use: $KUBECTL --kubeconfig $KUBECONFIG get workspace   (make down to stop)"
