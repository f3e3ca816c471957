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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  install
  mkdir -p "$dir/storage"
  stop
  user=${3:-kaito}
  password=${4:-$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)}
  if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kaito local registry CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 30 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
  fi
  # distribution accepts bcrypt entries only.
  htpasswd -Bbc "$dir/htpasswd" "$user" "$password" 2>/dev/null
  port=$(free_port)
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
  addr: 127.0.0.1:$port
  tls:
    certificate: $dir/server.crt
    key: $dir/server.key
  debug:
    addr: 127.0.0.1:$debug_port
auth:
  htpasswd:
    realm: kaito-local
    path: $dir/htpasswd
EOF
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
  # Ready when /v2/ answers 401 (auth on) over TLS signed by our CA.
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/ca.crt" "https://127.0.0.1:$port/v2/" || true)
    [ "$code" = 401 ] && break
    kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null || { cat "$dir/registry.log" >&2; exit 1; }
    sleep 0.1
  done
  [ "$code" = 401 ] || { echo "registry did not answer on 127.0.0.1:$port" >&2; cat "$dir/registry.log" >&2; exit 1; }
  cat > "$dir/registry.env" <<EOF
REGISTRY_HOST=127.0.0.1:$port
REGISTRY_USER=$user
REGISTRY_PASSWORD=$password
REGISTRY_CA=$dir/ca.crt
EOF
  cat "$dir/registry.env"
}

case "$cmd" in
  start) dir=$(mkdir -p "$dir" && cd "$dir" && pwd); start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR [USER [PASSWORD]]" >&2; exit 2 ;;
esac
