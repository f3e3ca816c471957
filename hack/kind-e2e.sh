#!/usr/bin/env bash
# End-to-end on a machine with Docker: a kind cluster, kaito's controller image loaded, the Helm
# chart installed, kwok faking GPU nodes, the seed Workspace to WORKSPACEREADY True.
# (The inference pods run on kwok's fake nodes, so nothing downloads a model.)
#
#   hack/kind-e2e.sh            # KEEP=1 keeps the cluster afterwards
# Needs: docker, kind, kubectl, helm on PATH (helm: `python -m kaito.envtest.helm` builds one).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-kaito-e2e}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
TAG=${TAG:-e2e}
REPO_IMAGE=${REPO_IMAGE:-localhost/kaito/workspace}
IMAGE=$REPO_IMAGE:$TAG
NS=kaito-system

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required on PATH" >&2; exit 3; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: the docker daemon is not reachable" >&2; exit 3; }

cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo ">> image $IMAGE"
TAG=$TAG REGISTRY=${REPO_IMAGE%/workspace} hack/images.sh controller
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo ">> kwok (fake GPU nodes) $KWOK_VERSION"
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION/kwok.yaml"
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION/stage-fast.yaml"
kubectl -n kube-system rollout status deployment/kwok-controller --timeout=180s

echo ">> kaito chart"
helm upgrade --install kaito charts/kaito -n "$NS" --create-namespace \
  --set image.repository="$REPO_IMAGE" --set image.tag="$TAG" --set image.pullPolicy=Never --wait --timeout 5m
kubectl -n "$NS" rollout status deployment/kaito-controller --timeout=180s

echo ">> a kwok GPU node labelled like AKS"
python3 - <<'PY' | kubectl apply -f -
import json
from kaito.provisioners.byo import gpu_node_manifest
print(json.dumps(gpu_node_manifest("gpu-e2e-0", "Standard_NC6s_v3", {"apps": "phi-3"})))
PY

echo ">> the seed Workspace"
kubectl apply -f tests/unit/api/seed/phi3_inference.yaml
kubectl wait workspace/workspace-phi-3-mini --for=condition=WorkspaceReady --timeout=300s
kubectl get workspace workspace-phi-3-mini

echo ">> a bad Workspace is refused by the webhook"
if kubectl apply -f - <<'YAML' 2>/tmp/kaito-e2e-denied; then
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata: {name: bad}
resource: {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {apps: x}}}
inference: {preset: {name: no-such-model}}
YAML
  echo "kind-e2e: FAIL: a Workspace with an unknown preset was admitted" >&2; exit 1
fi
grep -q "unknown preset" /tmp/kaito-e2e-denied

echo ">> delete"
kubectl delete workspace workspace-phi-3-mini --timeout=180s
echo "kind-e2e: OK"
