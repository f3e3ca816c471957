# kaito controller / node-provisioner image: slim, non-root, no compilers at run time.
#   docker build -f docker/controller.Dockerfile -t ghcr.io/kaito-project/kaito/workspace:0.1.0 .
# BASE: any image with python3 (3.11+) and its venv module; hack/images.sh passes a Debian
# bookworm base it makes with mmdebstrap when there is no Docker (docs/images.md).
# The Deployment runs it with a read-only root filesystem; only /tmp is writable (an emptyDir).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/kaito
COPY pyproject.toml README.md ./
# Dependencies first (read from pyproject.toml: the core plus the operator and aks extras), so
# that a change to src/ reuses this layer.
RUN /opt/kaito/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + [d for e in ('operator', 'aks') for d in p['optional-dependencies'][e]]))" > /tmp/requirements.txt \
 && /opt/kaito/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt
COPY src ./src
# The controller needs no ML stack: the base install only (no inference/tuning extras).
RUN /opt/kaito/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/kaito/bin/python -m compileall -q /opt/kaito

FROM ${BASE}
COPY --from=build /opt/kaito /opt/kaito
ENV PATH=/opt/kaito/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the "nonroot" user of distroless images, matching the manifests' runAsUser.
USER 65532:65532
ENTRYPOINT ["kaito"]
CMD ["controller"]
