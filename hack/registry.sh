#!/usr/bin/env bash
# A real OCI registry on loopback for tests and the local cluster: Debian's docker-registry
# (CNCF distribution) with TLS from a CA made here and htpasswd basic auth, so that image pushes
# really check credentials and certificates.
#
#   hack/registry.sh start DIR [USER [PASSWORD]]   # prints the lines of DIR/registry.env
#   hack/registry.sh stop DIR
#
# DIR receives ca.crt, server.{crt,key}, htpasswd, config.yml, registry.{pid,log} and
# registry.env (REGISTRY_HOST=127.0.0.1:PORT, REGISTRY_USER, REGISTRY_PASSWORD, REGISTRY_CA).
# Installs docker-registry and apache2-utils with apt-get when they are missing.
# REGISTRY_REDIRECT_BASEURL=http://host:port makes blob downloads answer with a redirect there
# (distribution's redirect storage middleware, as registries on object storage do), for tests of
# the puller's redirect checks; the target must serve DIR/storage at the same paths.
# REGISTRY_ADDRESS=IP binds another local address than 127.0.0.1 (a node in a network namespace
# reaches the host at e.g. 10.77.0.1); the server certificate then carries that IP as well.
# REGISTRY_AUTH=none serves pulls and pushes without credentials (registry.env then has no
# REGISTRY_USER/REGISTRY_PASSWORD), for nodes that pull with no pull secret.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [USER [PASSWORD]]" >&2; exit 2; }

stop() {
  if [ -f "$dir/registry.pid" ]; then
    pid=$(cat "$dir/registry.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$dir/registry.pid"
  fi
}

install() {
  command -v docker-registry >/dev/null && command -v htpasswd >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "docker-registry is missing; run: sudo apt-get install docker-registry apache2-utils" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null
}

free_port() {  # free_port [ADDRESS]
  python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

start() {
  install
  mkdir -p "$dir/storage"
  stop
  user=${3:-kaito}
  password=${4:-$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)}
  addr=${REGISTRY_ADDRESS:-127.0.0.1}
  auth=${REGISTRY_AUTH:-htpasswd}
  case "$auth" in htpasswd|none) ;; *) echo "REGISTRY_AUTH must be htpasswd or none, not '$auth'" >&2; exit 2 ;; esac
  sans="IP:127.0.0.1,DNS:localhost"
  [ "$addr" = 127.0.0.1 ] || sans="IP:$addr,$sans"
  if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kaito local registry CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    rm -f "$dir/server.crt"
  fi
  # A server certificate for this address (a DIR first started on another one gets a new one).
  if [ ! -f "$dir/server.crt" ] || [ "$(cat "$dir/server.addr" 2>/dev/null || echo 127.0.0.1)" != "$addr" ]; then
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$addr" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$sans" > "$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 30 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
  fi
  echo "$addr" > "$dir/server.addr"
  # distribution accepts bcrypt entries only.
  if [ "$auth" = htpasswd ]; then htpasswd -Bbc "$dir/htpasswd" "$user" "$password" 2>/dev/null; fi
  port=$(free_port "$addr")
  debug_port=$(free_port)
  cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $addr:$port
  tls:
    certificate: $dir/server.crt
    key: $dir/server.key
  debug:
    addr: 127.0.0.1:$debug_port
EOF
  if [ "$auth" = htpasswd ]; then
    cat >> "$dir/config.yml" <<EOF
auth:
  htpasswd:
    realm: kaito-local
    path: $dir/htpasswd
EOF
  fi
  if [ -n "${REGISTRY_REDIRECT_BASEURL:-}" ]; then
    cat >> "$dir/config.yml" <<EOF
middleware:
  storage:
    - name: redirect
      options:
        baseurl: $REGISTRY_REDIRECT_BASEURL
EOF
  fi
  setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 < /dev/null &
  echo $! > "$dir/registry.pid"
  # Ready when /v2/ answers 401 (auth on; 200 with REGISTRY_AUTH=none) over TLS signed by our CA.
  ready=401
  [ "$auth" = none ] && ready=200
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/ca.crt" "https://$addr:$port/v2/" || true)
    [ "$code" = "$ready" ] && break
    kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null || { cat "$dir/registry.log" >&2; exit 1; }
    sleep 0.1
  done
  [ "$code" = "$ready" ] || { echo "registry did not answer on $addr:$port" >&2; cat "$dir/registry.log" >&2; exit 1; }
  if [ "$auth" = htpasswd ]; then
    cat > "$dir/registry.env" <<EOF
REGISTRY_HOST=$addr:$port
REGISTRY_USER=$user
REGISTRY_PASSWORD=$password
REGISTRY_CA=$dir/ca.crt
EOF
  else
    cat > "$dir/registry.env" <<EOF
REGISTRY_HOST=$addr:$port
REGISTRY_CA=$dir/ca.crt
EOF
  fi
  cat "$dir/registry.env"
}

case "$cmd" in
  start) dir=$(mkdir -p "$dir" && cd "$dir" && pwd); start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR [USER [PASSWORD]]" >&2; exit 2 ;;
esac
