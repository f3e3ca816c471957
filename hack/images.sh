#!/usr/bin/env bash
# Build kaito's images: controller (also runs the node-provisioner), inference (vLLM CUDA base),
# tuning. Needs a container engine: docker, podman or buildah. Without one it says so and stops
# (exit 3); nothing here pretends to have built an image.
#
#   hack/images.sh [controller|inference|tuning ...]     # default: all three
#   REGISTRY=ghcr.io/me/kaito TAG=dev PUSH=1 hack/images.sh controller
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-ghcr.io/kaito-project/kaito}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
PUSH=${PUSH:-0}
declare -A NAMES=([controller]=workspace [inference]=inference [tuning]=tuning)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(controller inference tuning)

engine=""
for candidate in docker podman buildah; do
  if command -v "$candidate" >/dev/null 2>&1; then engine=$candidate; break; fi
done
if [ -z "$engine" ]; then
  echo "hack/images.sh: no container engine (docker, podman or buildah) on this machine;" >&2
  echo "  cannot build ${targets[*]}. Install one, or build on CI from docker/*.Dockerfile." >&2
  exit 3
fi
if [ "$engine" = docker ] && ! docker info >/dev/null 2>&1; then
  echo "hack/images.sh: docker is installed but its daemon is not reachable; start it and retry." >&2
  exit 3
fi

for t in "${targets[@]}"; do
  name=${NAMES[$t]:-}
  if [ -z "$name" ]; then
    echo "hack/images.sh: unknown image '$t'; use controller, inference or tuning" >&2
    exit 2
  fi
  ref="$REGISTRY/$name:$TAG"
  echo ">> building $ref with $engine (docker/$t.Dockerfile)"
  if [ "$engine" = buildah ]; then
    buildah bud -f "docker/$t.Dockerfile" -t "$ref" .
  else
    "$engine" build -f "docker/$t.Dockerfile" -t "$ref" .
  fi
  if [ "$PUSH" = 1 ]; then
    "$engine" push "$ref"
  fi
done
