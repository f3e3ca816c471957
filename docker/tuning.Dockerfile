# Tuning runtime: `python -m kaito.tuning` (fetch with SSRF checks, LoRA/QLoRA, OCI push).
#   docker build -f docker/tuning.Dockerfile -t ghcr.io/kaito-project/kaito/tuning:0.1.0 .
# BASE: a PyTorch CUDA runtime by default; the venv sees the base's packages (its torch), so on a
# plain python3 base (hack/images.sh BASE=local) pip installs torch from PyPI instead.
ARG BASE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
FROM ${BASE}
WORKDIR /opt/kaito-src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv --system-site-packages /opt/kaito \
 && /opt/kaito/bin/pip install --no-cache-dir --disable-pip-version-check ".[tuning]" \
 && rm -rf /opt/kaito-src
ENV PATH=/opt/kaito/bin:$PATH
WORKDIR /workspace
ENTRYPOINT ["python3", "-m", "kaito.tuning"]
