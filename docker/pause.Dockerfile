# The pod sandbox's pause process: src/kaito/envtest/nodeimages/pause.c, compiled static by hack/images.sh, which
# passes the directory holding the binary as the build context. The image is that one file.
#   gcc -static -Os -o pause src/kaito/envtest/nodeimages/pause.c && docker build -f docker/pause.Dockerfile .
ARG BASE=scratch
FROM ${BASE}
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
