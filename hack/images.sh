#!/usr/bin/env bash
# Build kaito's images from docker/<target>.Dockerfile:
#   controller (also runs the node-provisioner), inference, tuning   (the default: these three)
#   pause, curl                                                      (for tests on a real node)
#
#   hack/images.sh [controller|inference|tuning|pause|curl ...]
#   REGISTRY=ghcr.io/me/kaito TAG=dev PUSH=1 hack/images.sh controller
#   BASE=local REGISTRY=127.0.0.1:5000/kaito PUSH=1 REGISTRY_INSECURE=1 hack/images.sh pause curl
#   OUT=dist/images hack/images.sh pause curl      # also writes dist/images/<name>.tar (OCI archive)
#
# Engines: docker (with a running daemon), podman or buildah, in that order; ENGINE=... picks one.
# Without docker/podman, and always with BASE=local, it builds with buildah and no daemon
# (--storage-driver vfs, --isolation chroot, --layers) on a Debian bookworm base made here with
# mmdebstrap (python3, venv, pip, ca-certificates; cached under ~/.cache/kaito/images, keyed on
# its recipe). As root it installs buildah and mmdebstrap with apt-get when they are missing.
#
# Environment:
#   REGISTRY, TAG         image names: $REGISTRY/<name>:$TAG (TAG: pyproject's version)
#   PUSH=1                push each image to $REGISTRY
#   REGISTRY_INSECURE=1   push over plain HTTP or without checking the certificate
#   REGISTRY_CA=FILE      the CA that signed the registry's certificate (buildah)
#   REGISTRY_USER, REGISTRY_PASSWORD   credentials for the push
#   OUT=DIR               write DIR/<name>.tar, an OCI archive (ctr images import DIR/<name>.tar)
#   BASE                  unset: local base with buildah, the Dockerfiles' defaults otherwise;
#                         local: the mmdebstrap base; any other value: that image, for every target
#   STORAGE_DRIVER        buildah's storage driver (default vfs; overlay for inference/tuning)
#   STORAGE_ROOT=DIR      buildah's store in DIR (--root DIR --runroot DIR/run) instead of the
#                         default one: an overlay store must not share a root already used by vfs
#   BUILD_CA=FILE         a CA bundle mounted (not copied) over the build's
#                         /etc/ssl/certs/ca-certificates.crt while RUN steps download; default:
#                         this machine's bundle when it trusts a site CA (/usr/local/share/ca-certificates)
#   PRUNE=0               keep superseded builds (buildah). By default, once its builds are done,
#                         the script removes every image it built earlier (final and intermediate,
#                         known by their org.kaito.inputs label) whose build no image name points
#                         at any more: with vfs each layer is a full copy, ~1 GB per changed tree
# Exit 2: an unknown target. Exit 3: no engine and none can be installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-ghcr.io/kaito-project/kaito}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
PUSH=${PUSH:-0}
PRUNE=${PRUNE:-1}
OUT=${OUT:-}
VALID="controller inference tuning pause curl"
declare -A NAMES=([controller]=workspace [inference]=inference [tuning]=tuning [pause]=pause [curl]=curl)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(controller inference tuning)

# Targets first: a typo fails at once, whatever this machine has.
for t in "${targets[@]}"; do
  if [ -z "${NAMES[$t]:-}" ]; then
    echo "hack/images.sh: unknown image '$t'; valid targets: ${VALID// /, }" >&2
    exit 2
  fi
done

log() { echo ">> $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- the engine ----------------------------------------------------------------------------------
engine=${ENGINE:-}
if [ -z "$engine" ] && [ "${BASE:-}" != local ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  fi
fi
[ -z "$engine" ] && engine=buildah
if [ "$engine" = docker ] && ! docker info >/dev/null 2>&1; then
  echo "hack/images.sh: docker is installed but its daemon is not reachable; start it and retry." >&2
  exit 3
fi

apt_install() {  # apt_install COMMAND PACKAGE...: install when COMMAND is missing and we are root
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ "$(id -u 2>/dev/null || echo 1)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing $* (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    }
  fi
  command -v "$cmd" >/dev/null 2>&1
}

if [ "$engine" = buildah ] && ! apt_install buildah buildah; then
  echo "hack/images.sh: no container engine (docker, podman or buildah) on this machine;" >&2
  echo "  cannot build ${targets[*]}. Install one (sudo apt-get install -y --no-install-recommends" >&2
  echo "  buildah mmdebstrap builds without a daemon), or build on CI from docker/*.Dockerfile." >&2
  exit 3
fi
if ! command -v "$engine" >/dev/null 2>&1; then
  echo "hack/images.sh: ENGINE=$engine is not installed; cannot build ${targets[*]}." >&2
  exit 3
fi

STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
storage_args=(--storage-driver "$STORAGE_DRIVER")
[ -n "${STORAGE_ROOT:-}" ] && storage_args+=(--root "$STORAGE_ROOT" --runroot "$STORAGE_ROOT/run")
bah() { buildah "${storage_args[@]}" "$@"; }
export BUILDAH_ISOLATION=chroot

# BASE: unset means the local base under buildah, the Dockerfiles' defaults under docker/podman.
base_mode=${BASE:-}
if [ -z "$base_mode" ]; then
  [ "$engine" = buildah ] && base_mode=local || base_mode=default
fi
[ "$base_mode" = default ] && base_mode=""
if [ "$base_mode" = local ] && [ "$engine" != buildah ]; then
  echo "hack/images.sh: BASE=local needs buildah (ENGINE=$engine)." >&2
  exit 3
fi

# --- the local base: mmdebstrap bookworm -> tarball (cached) -> buildah image --------------------
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
MIRROR=${MIRROR:-}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kaito/images

local_base() {  # prints the image reference of the local base, building what is missing
  apt_install mmdebstrap mmdebstrap || {
    echo "hack/images.sh: BASE=local needs mmdebstrap; run: sudo apt-get install -y mmdebstrap" >&2
    exit 3
  }
  local recipe key tarball ref started
  recipe="mmdebstrap --variant=minbase --include=$BASE_PACKAGES $SUITE $MIRROR; python3 -> python"
  key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
  tarball=$CACHE/base-$SUITE-$key.tar
  ref=localhost/kaito/base:$SUITE-$key
  if bah inspect --type image "$ref" >/dev/null 2>&1; then
    echo "$ref"; return 0
  fi
  mkdir -p "$CACHE"
  if [ ! -f "$tarball" ] || [ ! -s "$tarball" ]; then
    rm -rf "$tarball"
    started=$(now)
    log "making the base rootfs with mmdebstrap ($SUITE: $BASE_PACKAGES)"
    rm -rf "$tarball.tmp.tar"
    # shellcheck disable=SC2086  # MIRROR: empty or one URL
    mmdebstrap --quiet --variant=minbase --format=tar --include="$BASE_PACKAGES" \
      --customize-hook='ln -sf python3 "$1/usr/bin/python"' \
      "$SUITE" "$tarball.tmp.tar" $MIRROR >&2
    mv "$tarball.tmp.tar" "$tarball"
    log "base rootfs: $(du -h "$tarball" | cut -f1) in $(since "$started") s ($tarball)"
  fi
  started=$(now)
  local ctr
  ctr=$(bah from scratch)
  bah add --quiet "$ctr" "$tarball" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash --label "org.kaito.base.recipe=$recipe" "$ctr"
  bah commit --quiet --rm "$ctr" "$ref" >/dev/null
  bah tag "$ref" "localhost/kaito/base:$SUITE"
  log "base image $ref imported in $(since "$started") s"
  echo "$ref"
}

# --- build, push, export -------------------------------------------------------------------------
push_args=()
if [ "$engine" = buildah ]; then
  [ "${REGISTRY_INSECURE:-0}" = 1 ] && push_args+=(--tls-verify=false)
  if [ -n "${REGISTRY_CA:-}" ]; then
    certdir=$(mktemp -d)
    trap 'rm -rf "$certdir"' EXIT
    cp "$REGISTRY_CA" "$certdir/ca.crt"
    push_args+=(--cert-dir "$certdir")
  fi
  [ -n "${REGISTRY_USER:-}" ] && push_args+=(--creds "$REGISTRY_USER:${REGISTRY_PASSWORD:-}")
else
  [ "${REGISTRY_INSECURE:-0}" = 1 ] && [ "$engine" = podman ] && push_args+=(--tls-verify=false)
fi

# A machine behind a TLS-inspecting proxy trusts a site CA that a fresh base does not: lend the
# bundle to the RUN steps only (buildah --volume; it is not committed into any layer).
build_ca=${BUILD_CA-auto}
if [ "$build_ca" = auto ]; then
  build_ca=""
  if [ "$engine" = buildah ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null \
    && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    build_ca=/etc/ssl/certs/ca-certificates.crt
  fi
fi

base_ref=""
if [ "$base_mode" = local ]; then
  base_ref=$(local_base) || exit 3
fi
[ -n "$base_mode" ] && [ "$base_mode" != local ] && base_ref=$base_mode

# What an image is made of: its Dockerfile, build arguments, base image ID and the files its
# COPY lines take (pause: its C source and the compiler). buildah stamps it on the image as a
# label, and an image that already carries the same stamp is not built again: with vfs storage
# even an all-cached `buildah bud --layers` copies every layer (tens of seconds); this takes one.
inputs_of() {  # inputs_of TARGET BASE_REF
  local t=$1 base=$2 srcs
  {
    echo "dockerfile"; cat "docker/$t.Dockerfile"
    echo "base $base"
    [ -n "$base" ] && bah inspect --type image --format '{{.FromImageID}}' "$base"
    if [ "$t" = pause ]; then
      cat src/kaito/envtest/nodeimages/pause.c; gcc --version | awk 'NR == 1'
    else
      srcs=$(awk 'toupper($1) == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) print $i }' "docker/$t.Dockerfile")
      # shellcheck disable=SC2086  # the source paths of COPY lines, relative to the repo root
      if [ -n "$srcs" ]; then
        find $srcs -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
      fi
    fi
  } | sha256sum | cut -c1-32
}

# Every run holds a shared lock on buildah's store while it builds; pruning takes it exclusively,
# and only when no other run holds it (an unnamed image may be a build in progress), so two runs
# at once (make test's lanes) never wait on each other and a prune skipped now happens next time.
if [ "$engine" = buildah ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/store.lock"
  flock -s 9
fi

prune_superseded() {
  # The images of builds no name points at any more, intermediates too. Kept: every named image,
  # every image of the same build as a named one (its org.kaito.inputs label: the build stage of
  # a multi-stage build is no ancestor of the final image), and every ancestor of those: its
  # layers and its history are a prefix of theirs (the cached steps a later build reuses, such as
  # the installed dependencies). Everything else carrying the label goes.
  local id name info stamp rest started
  declare -A named=() stamp_of=() diffs_of=() history_of=() keep_stamp=()
  while read -r id name; do
    [ "$name" != "<none>" ] && named[$id]=1
  done < <(bah images --noheading --no-trunc --format '{{.ID}} {{.Name}}')
  while read -r id; do
    info=$(bah inspect --type image --format \
      '{{index .OCIv1.Config.Labels "org.kaito.inputs"}}|{{range .OCIv1.RootFS.DiffIDs}}{{.}},{{end}}|{{range .OCIv1.History}}{{.CreatedBy}}{{"\x1f"}}{{end}}' \
      "$id" 2>/dev/null) || continue
    stamp=${info%%|*} rest=${info#*|}
    stamp_of[$id]=$stamp diffs_of[$id]=${rest%%|*} history_of[$id]=${rest#*|}
    [ -n "${named[$id]:-}" ] && [ -n "$stamp" ] && keep_stamp[$stamp]=1
  done < <(bah images --all --noheading --no-trunc --format '{{.ID}}' | sort -u)
  local keepers=() gone=() k kept
  for id in "${!stamp_of[@]}"; do
    if [ -n "${named[$id]:-}" ] || [ -n "${keep_stamp[${stamp_of[$id]:-none}]:-}" ]; then keepers+=("$id"); fi
  done
  for id in "${!stamp_of[@]}"; do
    stamp=${stamp_of[$id]}
    [ -z "$stamp" ] || [ -n "${named[$id]:-}" ] || [ -n "${keep_stamp[$stamp]:-}" ] && continue
    kept=""
    for k in "${keepers[@]}"; do
      # quoted patterns match literally, whatever the history's commands contain
      case "${diffs_of[$k]}" in "${diffs_of[$id]}"*) ;; *) continue ;; esac
      case "${history_of[$k]}" in "${history_of[$id]}"*) kept=1; break ;; esac
    done
    [ -z "$kept" ] && gone+=("$id")
  done
  [ ${#gone[@]} -eq 0 ] && return 0
  started=$(now)
  bah rmi --force "${gone[@]}" >/dev/null 2>&1 || true
  log "removed ${#gone[@]} image(s) of superseded builds in $(since "$started") s (PRUNE=0 keeps them)"
}

for t in "${targets[@]}"; do
  name=${NAMES[$t]}
  ref="$REGISTRY/$name:$TAG"
  context=.
  build_args=()
  [ -n "$build_ca" ] && [ "$engine" = buildah ] && build_args+=(--volume "$build_ca:/etc/ssl/certs/ca-certificates.crt:ro")
  [ "$t" != pause ] && [ -n "$base_ref" ] && build_args+=(--build-arg "BASE=$base_ref")
  [ "$t" = pause ] && { apt_install gcc gcc libc6-dev || { echo "hack/images.sh: pause needs gcc (and libc6-dev)" >&2; exit 3; }; }
  started=$(now)
  stamp="" have=""
  if [ "$engine" = buildah ]; then
    if [ "$t" = pause ]; then stamp=$(inputs_of "$t" ""); else stamp=$(inputs_of "$t" "$base_ref"); fi
    have=$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.kaito.inputs"}}' "$ref" 2>/dev/null || true)
    # The same inputs built under another name (REGISTRY or TAG): tag that image.
    if [ "$have" != "$stamp" ]; then
      same=$(bah images --noheading --no-trunc --format '{{.ID}}' --filter "label=org.kaito.inputs=$stamp" | awk 'NR == 1')
      if [ -n "$same" ]; then bah tag "$same" "$ref"; have=$stamp; fi
    fi
  fi
  if [ -n "$stamp" ] && [ "$have" = "$stamp" ]; then
    log "$ref is up to date (inputs $stamp)"
  else
    if [ "$t" = pause ]; then
      # A static binary from src/kaito/envtest/nodeimages/pause.c; its directory is the build context.
      context=$(mktemp -d)
      gcc -static -Os -s -Wall -Werror -o "$context/pause" src/kaito/envtest/nodeimages/pause.c
    fi
    log "building $ref with $engine (docker/$t.Dockerfile$([ "$t" != pause ] && [ -n "$base_ref" ] && echo ", BASE=$base_ref"))"
    if [ "$engine" = buildah ]; then
      bah bud --isolation chroot --layers --label "org.kaito.inputs=$stamp" "${build_args[@]}" \
        -f "docker/$t.Dockerfile" -t "$ref" "$context" >&2
    else
      "$engine" build "${build_args[@]}" -f "docker/$t.Dockerfile" -t "$ref" "$context"
    fi
    [ "$context" != . ] && rm -rf "$context"
  fi
  size=""
  # Also under a local name, so that a build for another REGISTRY finds it after this one's
  # name is untagged (tests do that).
  [ "$engine" = buildah ] && [ "$ref" != "localhost/kaito/$name:$TAG" ] && bah tag "$ref" "localhost/kaito/$name:$TAG"
  [ "$engine" = buildah ] && size=$(bah images --noheading --format '{{.Size}}' "$ref" | awk 'NR == 1')
  log "$ref ready in $(since "$started") s${size:+ ($size)}"
  if [ "$PUSH" = 1 ]; then
    started=$(now)
    if [ "$engine" = buildah ]; then
      bah push --quiet "${push_args[@]}" "$ref" "docker://$ref"
    else
      "$engine" push "${push_args[@]}" "$ref"
    fi
    log "pushed $ref in $(since "$started") s"
  fi
  if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    rm -f "$OUT/$name.tar"
    if [ "$engine" = docker ]; then
      docker save -o "$OUT/$name.tar" "$ref"
    elif [ "$engine" = podman ]; then
      podman save --format oci-archive -o "$OUT/$name.tar" "$ref"
    else
      bah push --quiet "$ref" "oci-archive:$OUT/$name.tar:$ref"
    fi
    log "wrote $OUT/$name.tar ($(du -h "$OUT/$name.tar" | cut -f1))"
  fi
  echo "$ref"
done

if [ "$engine" = buildah ] && [ "$PRUNE" = 1 ]; then
  flock -u 9
  if flock -n -x 9; then
    prune_superseded
  else
    log "another hack/images.sh is running: superseded images are left for the next run to remove"
  fi
fi
