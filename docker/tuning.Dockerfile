# Tuning runtime: `python -m kaito.tuning` (fetch with SSRF checks, LoRA/QLoRA, OCI push).
#   docker build -f docker/tuning.Dockerfile -t ghcr.io/kaito-project/kaito/tuning:0.1.0 .
ARG CUDA_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
FROM ${CUDA_IMAGE}
WORKDIR /opt/kaito-src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m pip install --no-cache-dir ".[tuning]" && rm -rf /opt/kaito-src
WORKDIR /workspace
ENTRYPOINT ["python3", "-m", "kaito.tuning"]
