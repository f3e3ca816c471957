#!/usr/bin/env bash
# Which node `make run` runs the seed on: prints "real" or "agent: <why not real>".
#   hack/choose-node.sh [auto|real|agent]      # NODE=... in make run
# auto picks the real node (containerd + kubelet, kaito's inference image; docs/local-cluster.md)
# when this machine can run it: root, a Linux with network namespaces, apt-get or the node's
# packages already there, and the disk its images need (25 GB free: the inference image lives in
# buildah's store, the registry and containerd). Otherwise the process agent, saying why, so a
# smaller machine still gets the seed's /chat.
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-auto}
need_gb=${KAITO_REAL_NODE_MIN_GB:-25}
case "$want" in
  real) echo real; exit 0 ;;
  agent) echo "agent: asked for (NODE=agent)"; exit 0 ;;
  auto) ;;
  *) echo "hack/choose-node.sh: NODE=$want: use auto, real or agent" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then echo "agent: not root (a real node needs namespaces, mounts, cgroups)"; exit 0; fi
if [ ! -d /run/netns ] && ! command -v ip >/dev/null 2>&1; then echo "agent: no iproute2 (ip netns)"; exit 0; fi
if ! command -v containerd >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
  echo "agent: no containerd and no apt-get to install it"; exit 0
fi
free_gb=$(df --output=avail -BG . | tail -1 | tr -dc '0-9')
store_gb=$(df --output=avail -BG /var/tmp | tail -1 | tr -dc '0-9')
[ "$store_gb" -lt "$free_gb" ] && free_gb=$store_gb
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "agent: ${free_gb} GB free, the real node's images need ${need_gb} GB (NODE=real to try anyway)"; exit 0
fi
echo real
