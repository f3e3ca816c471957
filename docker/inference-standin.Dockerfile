# kaito's inference image with weights baked in at /workspace/model, as a preset image carries its
# model: here the random-weight Phi-3-family stand-in (docs/local-cluster.md, "Weights offline"),
# for running the seed's Workspace offline on a real node (hack/run-real.sh). Build context: the
# stand-in's folder (config.json, tokenizer, safetensors; about 6 MB):
#   buildah bud -f docker/inference-standin.Dockerfile \
#     --build-arg BASE=ghcr.io/kaito-project/kaito/inference:0.1.0 \
#     -t ghcr.io/kaito-project/kaito/inference:0.1.0-standin ~/.cache/kaito/standin/phi-3-4k
# KAITO_STANDIN makes the server say so everywhere (start-up log, /health, a second served model
# name); the rest is what vLLM's CPU backend needs on a small node, as kaito's local node sets it.
ARG BASE=ghcr.io/kaito-project/kaito/inference:0.1.0
FROM ${BASE}
COPY . /workspace/model/
ENV KAITO_STANDIN="random-weight stand-in baked into the image: serving a small random-weight Phi-3-family model, its answers are not meaningful" \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=1 \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
