#!/usr/bin/env bash
# The `make run` demo on the local cluster: install kaito's CRDs, apply the example Workspaces
# from the user's README unchanged, and show what kubectl shows.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${1:-.kaito/local}
KUBECONFIG=$(python3 -c "import json,sys;print(json.load(open('$STATE/state.json'))['kubeconfig'])")
KUBECTL=$(python3 -c "import json,sys;print(json.load(open('$STATE/state.json'))['kubectl'])")
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
shopt -s nullglob
crds=(config/crd/*.yaml)
if [ ${#crds[@]} -gt 0 ]; then
  echo "== installing CRDs"
  for f in "${crds[@]}"; do k apply --server-side --force-conflicts -f "$f"; done
  k wait --for=condition=Established crd --all --timeout=60s >/dev/null
fi
if k get crd workspaces.kaito.sh >/dev/null 2>&1; then
  # The README's inference and tuning examples share names, so tuning goes to its own namespace.
  echo "== applying the README's Workspaces unchanged (examples/)"
  k apply -f examples/inference/
  k create namespace kaito-tuning --dry-run=client -o yaml | k apply -f - >/dev/null
  k apply -n kaito-tuning -f examples/tuning/
fi
echo "== kubectl get nodes,namespaces"
k get nodes,namespaces
if k get crd workspaces.kaito.sh >/dev/null 2>&1; then
  echo "== kubectl get workspace"
  k get workspace -A
fi
echo
echo "cluster is up; use: $KUBECTL --kubeconfig $KUBECONFIG get workspace   (make down to stop)"
