# curl on Debian: a probe/client image for tests on a real node (hack/images.sh curl).
#   docker build -f docker/curl.Dockerfile -t ghcr.io/kaito-project/kaito/curl:0.1.0 .
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
USER 65532:65532
ENTRYPOINT ["curl"]
