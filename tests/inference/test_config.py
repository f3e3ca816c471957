"""Engine arguments from presets x SKUs, the config file, flags, and start-up refusals.

The argument tests parse with vLLM's real argument parser (no model is loaded); the start-up
tests run the real server process and check it stops with one clear line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.inference.conftest import ADAPTER, Assets, cpu_env

from kaito.inference.adapters import Adapter, discover, prepare_for_vllm
from kaito.inference.config import ConfigError, parse_settings

pytestmark = pytest.mark.vllm


def vllm_args(argv: list[str]):  # type: ignore[no-untyped-def]
    from kaito.inference.vllm_backend import _parser, vllm_argv

    settings = parse_settings(argv)
    parser = _parser()
    return settings, parser.parse_args(vllm_argv(settings, [], parser))


def test_phi3_on_nc6s_v3_is_one_gpu_float16() -> None:
    _, a = vllm_args(
        ["--model", "/m", "--preset", "phi-3-mini-4k-instruct", "--instance-type", "Standard_NC6s_v3"]
    )
    assert a.tensor_parallel_size == 1
    assert a.pipeline_parallel_size == 1
    assert a.dtype == "float16"  # V100: no bf16
    assert a.max_model_len == 4096
    assert a.gpu_memory_utilization == pytest.approx(0.90)
    assert a.served_model_name == ["phi-3-mini-4k-instruct"]


def test_every_preset_on_every_fitting_sku_parses() -> None:
    from kaito.presets import estimate, get_sku, list_presets, rank_skus

    checked = 0
    for preset in list_presets():
        if "vllm" not in preset.runtimes:
            continue
        for plan in rank_skus(preset)[:3]:
            sku_name = plan.instance_type
            _, a = vllm_args(["--model", "/m", "--preset", preset.name, "--instance-type", sku_name])
            e = estimate(preset, get_sku(sku_name))  # type: ignore[arg-type]
            assert a.tensor_parallel_size == e.tensor_parallel
            assert a.pipeline_parallel_size == e.pipeline_parallel
            assert a.dtype == e.dtype
            assert a.max_model_len == e.max_model_len
            if preset.tool_parser:
                assert a.tool_call_parser == preset.tool_parser and a.enable_auto_tool_choice
            checked += 1
    assert checked >= 5


def test_config_file_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text(
        "vllm:\n  max-model-len: 1024\n  enable-prefix-caching: false\n  gpu-memory-utilization: 0.8\n"
        "server:\n  max_queue: 7\n"
    )
    s, a = vllm_args(["--model", "/m", "--config", str(cfg), "--max-model-len", "2048", "--seed", "3"])
    assert a.max_model_len == 2048  # flag beats file
    assert a.gpu_memory_utilization == pytest.approx(0.8)
    assert a.enable_prefix_caching is False
    assert a.seed == 3  # a vLLM flag kaito does not define passes through
    assert s.max_queue == 7


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        (
            "vllm:\n  max-modle-len: 10\n",
            "unknown vLLM engine argument(s): max-modle-len (did you mean max-model-len?)",
        ),
        ("vllm:\n  dtype: float99\n", "invalid vLLM argument"),
        ("vlm:\n  dtype: auto\n", "unknown section(s) ['vlm']"),
        ("server:\n  max_queue: -1\n", "max_queue"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, yaml_text: str, needle: str) -> None:
    from kaito.inference.vllm_backend import _parser, vllm_argv

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        settings = parse_settings(["--model", "/m", "--config", str(cfg)])
        parser = _parser()
        parser.parse_args(vllm_argv(settings, [], parser))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_or_sku() -> None:
    with pytest.raises(ConfigError, match="preset 'nope'"):
        parse_settings(["--preset", "nope"])
    with pytest.raises(ConfigError, match="not in the GPU SKU table"):
        parse_settings(["--preset", "phi-3-mini-4k-instruct", "--instance-type", "Standard_Nope"])


def run_server_expecting_failure(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kaito.inference", "--host", "127.0.0.1", "--port", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or cpu_env(), timeout=300)


def test_server_refuses_unknown_flag_with_one_line(assets: Assets) -> None:
    r = run_server_expecting_failure(["--model", str(assets.model), "--no-such-flag", "1"])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kaito serve:")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("kaito serve: invalid vLLM argument: unrecognized arguments: --no-such-flag")


def test_strength_is_applied_by_scaling_or_refused(assets: Assets, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    found = discover(assets.adapters_dir, env={ADAPTER: "0.5"})
    assert [a.name for a in found] == [ADAPTER] and found[0].strength == 0.5
    scaled = prepare_for_vllm(found, tmp_path)[0]
    src, dst = (
        load_file(str(found[0].path / "adapter_model.safetensors")),
        load_file(str(scaled.path / "adapter_model.safetensors")),
    )
    for k, v in src.items():
        factor = 0.5 if "lora_B" in k else 1.0
        assert (dst[k] - v * factor).abs().max().item() < 1e-6, k

    dora = tmp_path / "dora-src" / "d"
    dora.mkdir(parents=True)
    (dora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True, "r": 8}))
    with pytest.raises(ConfigError, match=r"strength 0\.3 cannot be applied by vLLM"):
        prepare_for_vllm([Adapter("d", dora, 0.3, 8)], tmp_path / "out")
    with pytest.raises(ConfigError, match="not a number"):
        discover(assets.adapters_dir, env={ADAPTER: "strong"})
