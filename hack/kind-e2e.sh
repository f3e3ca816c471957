#!/usr/bin/env bash
# The e2e suite (tests/e2e/test_in_cluster_install.py) on kind, on a machine with Docker or Podman:
# the same story `make test` runs on kaito's local real node — images built and pushed to a
# registry, helm install, the README's Workspace Ready on a GPU node kaito's node-provisioner made
# (kwok fakes the machine), a tuning Job, a pod calling a Service, helm upgrade, failover, uninstall.
#
#   hack/kind-e2e.sh              # KEEP=1 keeps the cluster and the registry afterwards
#
# Needs: docker (or podman with KIND_EXPERIMENTAL_PROVIDER=podman), kind, kubectl on PATH, and
# network access for kind's node image, registry:2 and kwok's manifests. helm is built by
# `python -m kaito.envtest.helm` when missing. Not run on kaito's own CI machine: it has no
# container engine, and kind cannot start a node there (docs/installation.md, "kind").
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-kaito-e2e}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
REG_NAME=${REG_NAME:-kaito-e2e-registry}
REG_PORT=${REG_PORT:-5001}
ENGINE=${ENGINE:-$( [ "${KIND_EXPERIMENTAL_PROVIDER:-}" = podman ] && echo podman || echo docker )}
PY=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)

for tool in "$ENGINE" kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required on PATH" >&2; exit 3; }
done
"$ENGINE" info >/dev/null 2>&1 || { echo "kind-e2e: the $ENGINE engine is not reachable" >&2; exit 3; }
[ -x "$PY" ] || { echo "kind-e2e: $PY is missing; run \`make venv\` first" >&2; exit 3; }

cleanup() {
  rm -rf "$WORK"
  if [ "${KEEP:-0}" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    "$ENGINE" rm -f "$REG_NAME" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo ">> a registry on localhost:$REG_PORT (plain HTTP, as kind's own guide sets one up)"
"$ENGINE" inspect "$REG_NAME" >/dev/null 2>&1 \
  || "$ENGINE" run -d --restart=always -p "127.0.0.1:$REG_PORT:5000" --name "$REG_NAME" registry:2 >/dev/null

echo ">> kind cluster $CLUSTER whose containerd reads registry hosts from certs.d"
cat >"$WORK/kind.yaml" <<'YAML'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
YAML
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 180s
# the nodes pull localhost:$REG_PORT/... from the registry container on kind's network
for node in $(kind get nodes --name "$CLUSTER"); do
  "$ENGINE" exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$REG_PORT"
  printf '[host."http://%s:5000"]\n' "$REG_NAME" \
    | "$ENGINE" exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:$REG_PORT/hosts.toml"
done
"$ENGINE" network connect kind "$REG_NAME" 2>/dev/null || true
kind get kubeconfig --name "$CLUSTER" >"$WORK/kubeconfig"
export KUBECONFIG=$WORK/kubeconfig

echo ">> kwok $KWOK_VERSION (fakes the GPU nodes kaito's node-provisioner makes)"
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION/kwok.yaml"
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION/stage-fast.yaml"
kubectl -n kube-system rollout status deployment/kwok-controller --timeout=180s

echo ">> the e2e suite"
KAITO_E2E_KUBECONFIG=$KUBECONFIG KAITO_E2E_REGISTRY=localhost:$REG_PORT KAITO_E2E_REGISTRY_INSECURE=1 \
  KUBECTL=$(command -v kubectl) "$PY" -m pytest tests/e2e/test_in_cluster_install.py -v "$@"
echo "kind-e2e: OK"
