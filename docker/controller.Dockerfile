# kaito controller / node-provisioner image: slim, non-root, no compilers at run time.
#   docker build -f docker/controller.Dockerfile -t ghcr.io/kaito-project/kaito/workspace:0.1.0 .
# The Deployment runs it with a read-only root filesystem; only /tmp is writable (an emptyDir).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN python -m venv /opt/kaito
COPY pyproject.toml README.md ./
COPY src ./src
# The controller needs no ML stack: the base install only (no inference/tuning extras).
RUN /opt/kaito/bin/pip install --no-cache-dir . \
 && /opt/kaito/bin/python -m compileall -q /opt/kaito

FROM python:${PYTHON_VERSION}-slim
COPY --from=build /opt/kaito /opt/kaito
ENV PATH=/opt/kaito/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the "nonroot" user of distroless images, matching the manifests' runAsUser.
USER 65532:65532
ENTRYPOINT ["kaito"]
CMD ["controller"]
