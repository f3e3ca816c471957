#!/usr/bin/env bash
# The seed's story, literally, on a real node (root): `kaito local up --node real --registry`
# (control plane + containerd/kubelet/kube-proxy in a network namespace + an image registry on
# the node's host address), kaito's CPU inference image with the random-weight stand-in baked in
# pushed there, the kaito controller with its kwok node-provisioner adopting the real node for
# the claim (--real-nodes apps=phi-3), the README's Workspace applied unchanged, WORKSPACEREADY,
# `kubectl get svc`, and the README's curl from a pod (`kubectl run ... curl`) to the ClusterIP.
#
#   hack/run-real.sh [STATE_DIR]          # default .kaito/real; `make run-real`
#   KAITO_REAL_KEEP=0 hack/run-real.sh    # take the cluster down at the end (the e2e test does)
#   KAITO_KEEP_IMAGES=0                   # drop buildah's copy of the inference image once pushed
#
# Disk: the inference image is about 7.5 GB unpacked, 3.4 GB compressed. The run holds it in
# buildah's store (7.5), the registry (3.4) and the node's containerd (7.5, unpacked only), and
# a push or a pull briefly needs its compressed size again; about 25 GB free in all, or 18 GB
# with KAITO_KEEP_IMAGES=0.
#
# Images are built with buildah on overlay storage in $KAITO_IMAGE_STORE (default
# /var/tmp/kaito-images; several GB: the inference image is ~7 GB unpacked) and are rebuilt only
# when their inputs change (hack/images.sh's input stamp). Prints the seconds from start to the
# curl answer, and the kubelet's pull time for the inference image.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_START=${KAITO_RUN_START:-$(date +%s)}  # `make run` sets it when it starts: its set-up counts too
STATE=${1:-.kaito/real}
PY=${PYTHON:-.venv/bin/python}
IPY=${INFERENCE_PYTHON:-.venv-inference/bin/python}
STORE=${KAITO_IMAGE_STORE:-/var/tmp/kaito-images}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
NAME=workspace-phi-3-mini
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
[ "$(id -u)" = 0 ] || { echo "hack/run-real.sh: needs root (a real node)"; exit 2; }
since() { echo $(( $(date +%s) - $1 )); }
# KAITO_BUILD_TMPDIR: where buildah keeps its temporary copies of a layer while committing or
# pushing (TMPDIR; default /var/tmp): a tmpfs such as /dev/shm spares the disk two copies of the
# largest layer (about 3.5 GB) for a moment.
BUILD_TMP=${KAITO_BUILD_TMPDIR:-${TMPDIR:-/var/tmp}}
mkdir -p "$BUILD_TMP"
bah() { TMPDIR=$BUILD_TMP buildah --storage-driver overlay --root "$STORE" --runroot "$STORE/run" "$@"; }

echo "== images: inference (CPU vLLM, local base) and curl, buildah overlay store $STORE"
t=$(date +%s)
TMPDIR=$BUILD_TMP STORAGE_DRIVER=overlay STORAGE_ROOT=$STORE BASE=local TAG=$TAG nice -n 10 hack/images.sh inference curl
echo "   images ready in $(since "$t") s"

STANDIN=${KAITO_STANDIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaito/standin/phi-3-4k}
if [ ! -f "$STANDIN/config.json" ]; then
  echo "== building the random-weight stand-in model into $STANDIN (once)"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$IPY" -c "import sys; from pathlib import Path; \
from kaito.contract.tinymodel import build_tiny_model; build_tiny_model(Path(sys.argv[1]), max_position_embeddings=4096)" \
    "$STANDIN.tmp"
  mv "$STANDIN.tmp" "$STANDIN"
fi
BASE_REF=ghcr.io/kaito-project/kaito/inference:$TAG
STANDIN_REF=ghcr.io/kaito-project/kaito/inference:$TAG-standin
stamp=$( { bah images --noheading --format '{{.ID}}' "$BASE_REF"; sha256sum docker/inference-standin.Dockerfile;
  (cd "$STANDIN" && sha256sum ./*); } | sha256sum | cut -c1-16)
if [ "$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.kaito.inputs"}}' "$STANDIN_REF" 2>/dev/null || true)" != "$stamp" ]; then
  echo "== the stand-in image: the weights baked in at /workspace/model ($STANDIN_REF)"
  t=$(date +%s)
  bah bud --isolation chroot --layers --label "org.kaito.inputs=$stamp" --build-arg "BASE=$BASE_REF" \
    -f "$PWD/docker/inference-standin.Dockerfile" -t "$STANDIN_REF" "$STANDIN" >/dev/null
  echo "   built in $(since "$t") s"
fi

echo "== kaito local up --node real --registry (state $STATE)"
"$PY" -m kaito.cli.main local up --node real --registry --state-dir "$STATE" >/dev/null
state() { "$PY" -c "import json,sys;print(json.load(open('$STATE/state.json'))$1)"; }
KUBECONFIG=$(state "['kubeconfig']")
KUBECTL=$(state "['kubectl']")
REG=$(state "['registry']")
REG_CA=$(state "['registry_ca']")
APISERVER_PID=$(state "['pids']['kube-apiserver']")
export KUBECONFIG
k() { "$KUBECTL" "$@"; }
echo "   registry $REG (CA $REG_CA), up at $(since "$RUN_START") s"

echo "== pushing the images to $REG/kaito"
certdir=$(mktemp -d)
trap 'rm -rf "$certdir"' EXIT
cp "$REG_CA" "$certdir/ca.crt"
INFERENCE_IMAGE=$REG/kaito/inference:$TAG-standin
CURL_IMAGE=$REG/kaito/curl:$TAG
t=$(date +%s)
bah push --quiet --cert-dir "$certdir" "$STANDIN_REF" "docker://$INFERENCE_IMAGE" >/dev/null
echo "   inference pushed in $(since "$t") s"
t=$(date +%s)
bah push --quiet --cert-dir "$certdir" "ghcr.io/kaito-project/kaito/curl:$TAG" "docker://$CURL_IMAGE" >/dev/null
echo "   curl pushed in $(since "$t") s"
if [ "${KAITO_KEEP_IMAGES:-1}" = 0 ]; then
  # the registry holds them now; a disk too small for both drops buildah's copy (a later run
  # builds it again)
  bah rmi "$STANDIN_REF" "$BASE_REF" "localhost/kaito/inference:$TAG" >/dev/null
  echo "   KAITO_KEEP_IMAGES=0: removed the inference images from $STORE"
fi

echo "== CRDs"
for f in config/crd/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || k apply --server-side --force-conflicts -f "$f" >/dev/null
done
k wait --for=condition=Established crd --all --timeout=60s >/dev/null

echo "== the kaito controller: gpu-provisioner backend + kwok node-provisioner adopting the real node"
echo "   (--real-nodes apps=phi-3 --inference-image $INFERENCE_IMAGE); log $STATE/controller.log"
if [ -f "$STATE/controller.pid" ]; then kill "$(cat "$STATE/controller.pid")" 2>/dev/null || true; fi
PROBE_PORT=$("$PY" -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
nohup "$PY" -m kaito.cli.main controller --kubeconfig "$KUBECONFIG" \
  --node-provisioner gpu-provisioner --node-provisioner-cloud kwok --real-nodes apps=phi-3 \
  --inference-image "$INFERENCE_IMAGE" \
  --metrics-bind-address 0 --health-probe-bind-address "127.0.0.1:$PROBE_PORT" \
  >"$STATE/controller.log" 2>&1 </dev/null &
CTRL=$!
echo "$CTRL" >"$STATE/controller.pid"
nohup bash -c "while kill -0 $APISERVER_PID 2>/dev/null && kill -0 $CTRL 2>/dev/null; do sleep 2; done; kill $CTRL 2>/dev/null" \
  >/dev/null 2>&1 </dev/null &
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PROBE_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$CTRL" 2>/dev/null || { echo "controller exited:"; tail -20 "$STATE/controller.log"; exit 1; }
  sleep 0.5
done

echo "== kubectl get nodes (the real node, idle)"
k get nodes -o wide | sed 's/^/   /'
echo "== kubectl apply -f examples/inference/kaito_workspace_phi_3.yaml (the README's, unchanged)"
APPLIED=$(date +%s)
k apply -f examples/inference/kaito_workspace_phi_3.yaml

echo "== waiting for WORKSPACEREADY"
last=""
while :; do
  now=$(k get workspace "$NAME" -o jsonpath='resource={.status.conditions[?(@.type=="ResourceReady")].status} inference={.status.conditions[?(@.type=="InferenceReady")].status} ready={.status.conditions[?(@.type=="WorkspaceReady")].status}' 2>/dev/null || true)
  pod=$(k get pod "$NAME-0" -o jsonpath='{.status.phase} {.status.containerStatuses[0].state}' 2>/dev/null | cut -c1-110 || true)
  if [ "$now $pod" != "$last" ]; then
    echo "   $(since "$APPLIED") s: $now | pod $NAME-0: ${pod:--}"
    last="$now $pod"
  fi
  case "$now" in *"ready=True"*) break ;; esac
  if [ "$(since "$APPLIED")" -gt "${KAITO_REAL_TIMEOUT:-1800}" ]; then
    echo "not Ready after ${KAITO_REAL_TIMEOUT:-1800} s"; k describe pod "$NAME-0" | tail -20; tail -20 "$STATE/controller.log"; exit 1
  fi
  kill -0 "$CTRL" 2>/dev/null || { echo "controller exited:"; tail -30 "$STATE/controller.log"; exit 1; }
  sleep 2
done
echo "   WORKSPACEREADY after $(since "$APPLIED") s (apply -> Ready), $(since "$RUN_START") s from start"
k get events --field-selector "involvedObject.name=$NAME-0,reason=Pulled" -o jsonpath='{range .items[*]}   kubelet: {.message}{"\n"}{end}'

echo "== kubectl get nodeclaims; get nodes; get workspace; get svc $NAME"
k get nodeclaims.karpenter.sh
k get nodes -L apps,node.kubernetes.io/instance-type
k get workspace
k get svc "$NAME"
CLUSTERIP=$(k get svc "$NAME" -o jsonpath='{.spec.clusterIP}')

# The README's command with only the image changed. On AKS this pod lands on a system node; here
# the adopted GPU node (tainted sku=gpu:NoSchedule like the claim) is the only node, so the pod
# also tolerates that taint.
IT=-i; [ -t 0 ] && IT=-it
TOLERATE='{"apiVersion":"v1","spec":{"tolerations":[{"key":"sku","operator":"Equal","value":"gpu","effect":"NoSchedule"}]}}'
echo "== kubectl run $IT --rm --restart=Never curl --image=$CURL_IMAGE -- curl -X POST http://$CLUSTERIP/chat ..."
t=$(date +%s)
answer=$(k run $IT --rm --restart=Never curl --image="$CURL_IMAGE" --overrides="$TOLERATE" --pod-running-timeout=5m \
  -- curl -sS -X POST "http://$CLUSTERIP/chat" -H "accept: application/json" -H "Content-Type: application/json" \
  -d '{"prompt":"What is Kubernetes?"}' </dev/null)
echo "$answer"
# curl's answer has no newline, so kubectl's `pod "curl" deleted` may follow it on the same line
printf '%s\n' "$answer" | sed -E 's/pod "curl[^"]*" deleted.*$//' | grep -m1 '^{' >"$STATE/answer.json" \
  || { echo "no JSON answer from /chat"; exit 1; }
echo "   answered in $(since "$t") s; $(since "$RUN_START") s from start to the curl answer"
# (the README repeats `curl` after `--`: the image's entrypoint already is curl, so curl also tries
# a host named "curl" and says it cannot resolve it, then posts; kept as the README has it)
echo "== GET /v1/models (vLLM's own route)"
k run -i --rm --restart=Never curl-models --image="$CURL_IMAGE" --overrides="$TOLERATE" \
  -- -sS "http://$CLUSTERIP/v1/models" </dev/null | sed -E 's/pod "curl[^"]*" deleted.*$//' \
  | grep -m1 '^{' | tee "$STATE/models.json"
if [ "${KAITO_REAL_KEEP:-1}" = 0 ]; then
  kill "$CTRL" 2>/dev/null || true
  "$PY" -m kaito.cli.main local down --state-dir "$STATE"
else
  echo "kaito is running on the real node (controller pid $CTRL); stop with:"
  echo "  kill $CTRL; $PY -m kaito.cli.main local down --state-dir $STATE"
fi
