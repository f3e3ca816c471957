# Inference runtime: `python -m kaito.inference` (vLLM's OpenAI server plus kaito's config,
# adapters and rate limit), on vLLM's CUDA image.
#   docker build -f docker/inference.Dockerfile -t ghcr.io/kaito-project/kaito/inference:0.1.0 .
# Model weights are not baked in: presets download them at start (or mount them at
# /workspace/weights); the controller's pod spec passes the command line.
ARG VLLM_IMAGE=vllm/vllm-openai:latest
FROM ${VLLM_IMAGE}
WORKDIR /opt/kaito-src
COPY pyproject.toml README.md ./
COPY src ./src
# vLLM and torch come from the base image; install kaito without touching them.
RUN python3 -m pip install --no-cache-dir --no-deps . \
 && python3 -m pip install --no-cache-dir "peft>=0.11" pydantic structlog typer pyyaml prometheus-client \
 && rm -rf /opt/kaito-src
WORKDIR /workspace
EXPOSE 5000
ENTRYPOINT ["python3", "-m", "kaito.inference"]
