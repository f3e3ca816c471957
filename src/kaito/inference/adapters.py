"""LoRA adapters found on disk: every folder under the adapters dir with an adapter_config.json.

Each adapter is served as a model named after its folder. Its strength comes, as in Kaito, from
an environment variable named exactly after the adapter (the workspace controller sets
``<name>=<strength>`` on the container); unset means 1.0.

vLLM applies LoRA at full strength only. A strength other than 1.0 is honoured by writing a
scaled copy of the adapter (LoRA's update is ``scale * B @ A``, so multiplying every ``lora_B``
tensor by the strength is exact) when the adapter is a plain LoRA in safetensors form; anything
else (DoRA, modules_to_save, pickled weights) is refused at start-up rather than silently
served at the wrong strength.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito.contract import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from kaito.inference.config import ConfigError

ADAPTER_CONFIG = ADAPTER_CONFIG_FILE
WEIGHTS = ADAPTER_WEIGHTS_FILE


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path
    strength: float = 1.0
    rank: int = 0


def _strength(name: str, env: Mapping[str, str]) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"adapter {name!r}: strength {raw!r} (env {name}) is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"adapter {name!r}: strength {raw!r} must be a finite number >= 0")
    return value


def discover(adapters_dir: Path, env: Mapping[str, str] | None = None) -> list[Adapter]:
    """Adapters under ``adapters_dir`` in name order; a missing dir means none."""
    env = os.environ if env is None else env
    if not adapters_dir.is_dir():
        return []
    found: list[Adapter] = []
    for child in sorted(adapters_dir.iterdir()):
        cfg_path = child / ADAPTER_CONFIG
        if not child.is_dir() or not cfg_path.is_file():
            continue
        try:
            cfg: dict[str, Any] = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"adapter {child.name!r}: unreadable {ADAPTER_CONFIG}: {exc}") from None
        rank = int(cfg.get("r") or 0)
        found.append(Adapter(child.name, child, _strength(child.name, env), rank))
    return found


def _scalable(adapter: Adapter) -> str | None:
    """Why this adapter's strength cannot be applied by scaling B, or None if it can."""
    cfg = json.loads((adapter.path / ADAPTER_CONFIG).read_text())
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        return f"peft_type {cfg.get('peft_type')!r} is not LoRA"
    if cfg.get("use_dora"):
        return "DoRA adapters cannot be rescaled"
    if cfg.get("modules_to_save"):
        return "adapters with modules_to_save cannot be rescaled"
    if not (adapter.path / WEIGHTS).is_file():
        return f"only {WEIGHTS} weights can be rescaled"
    return None


def prepare_for_vllm(adapters: list[Adapter], work_dir: Path) -> list[Adapter]:
    """Adapters vLLM can load as they are: strength-1.0 ones unchanged, others as scaled copies."""
    out: list[Adapter] = []
    for a in adapters:
        if a.strength == 1.0:
            out.append(a)
            continue
        why = _scalable(a)
        if why is not None:
            raise ConfigError(
                f"adapter {a.name!r}: strength {a.strength} cannot be applied by vLLM ({why}); "
                f"set {a.name}=1.0 or use --runtime transformers"
            )
        out.append(_scaled_copy(a, work_dir / a.name))
    return out


def _scaled_copy(a: Adapter, dest: Path) -> Adapter:
    import importlib

    st = importlib.import_module("safetensors.torch")  # inference venv only
    load_file, save_file = st.load_file, st.save_file
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(a.path, dest, ignore=shutil.ignore_patterns(WEIGHTS))
    tensors = load_file(str(a.path / WEIGHTS))
    scaled = {k: (v * a.strength if "lora_B" in k else v) for k, v in tensors.items()}
    save_file(scaled, str(dest / WEIGHTS), metadata={"format": "pt"})
    return Adapter(a.name, dest, a.strength, a.rank)
