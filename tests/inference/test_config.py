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
    assert a.gpu_memory_utilization == pytest.approx(0.84)  # what upstream's operator passes
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
        "server:\n  max_queue: 7\n  body_timeout: 12\n"
    )
    s, a = vllm_args(["--model", "/m", "--config", str(cfg), "--max-model-len", "2048", "--seed", "3"])
    assert a.max_model_len == 2048  # flag beats file
    assert a.gpu_memory_utilization == pytest.approx(0.8)
    assert a.enable_prefix_caching is False
    assert a.seed == 3  # a vLLM flag kaito does not define passes through
    assert s.max_queue == 7
    assert s.body_timeout == 12


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
        ("server:\n  body_timeout: soon\n", "body_timeout"),
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


# --- upstream Kaito compatibility: its ConfigMap and flags, unchanged -------------------------

UPSTREAM_CM = Path(__file__).resolve().parents[1] / "data" / "upstream" / "inference-params-template.yaml"


def upstream_config(tmp_path: Path, source: Path = UPSTREAM_CM) -> Path:
    """The inference_config.yaml key of an upstream ConfigMap, as the pod sees it mounted."""
    import yaml

    cm = yaml.safe_load(source.read_text())
    path = tmp_path / "inference_config.yaml"
    path.write_text(cm["data"]["inference_config.yaml"])
    return path


def test_upstream_default_configmap_parses(tmp_path: Path) -> None:
    s, a = vllm_args(["--model", "/m", "--kaito-config-file", str(upstream_config(tmp_path))])
    assert s.max_probe_steps == 6
    assert a.max_model_len == -1  # upstream probes for the longest fitting context: vLLM's "auto"
    assert a.cpu_offload_gb == 0
    assert not hasattr(a, "swap_space")  # gone from vLLM; dropped with a warning, not refused
    assert any(w.startswith("ignoring vLLM argument swap-space") for w in s.warnings)


def test_upstream_tool_calling_configmap_parses(tmp_path: Path) -> None:
    source = UPSTREAM_CM.parent / "tool-calling-inference-config.yaml"
    s, a = vllm_args(["--model", "/m", "--kaito-config-file", str(upstream_config(tmp_path, source))])
    assert a.tool_call_parser == "phi4_mini_json" and a.max_model_len == -1
    assert a.chat_template is None  # upstream's image path: the model's own template instead
    assert any(w.startswith("ignoring chat-template /workspace/chat_templates/") for w in s.warnings)


def test_upstream_flags_are_accepted(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    cfg = upstream_config(tmp_path)
    s = parse_settings(
        [
            "--kaito-config-file",
            str(cfg),
            "--kaito-adapters-dir",
            str(adapters),
            "--kaito-max-probe-steps",
            "0",
            "--kaito-kv-cache-cpu-memory-utilization",
            "0.3",
            "--kaito-disable-rate-limit",
            "--preset",
            "phi-3-mini-4k-instruct",
            "--instance-type",
            "Standard_NC6s_v3",
        ]
    )
    assert s.adapters_dir == adapters and not s.rate_limit and s.max_probe_steps == 0
    assert s.engine_args["max_model_len"] == 4096  # no probing: the estimator's plan stands
    assert any("kv_cache_cpu_memory_utilization 0.3" in w and "LMCache" in w for w in s.warnings)
    assert parse_settings(["--model", "/m"]).rate_limit


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("max_probe_steps: -1\n", "max_probe_steps must be a non-negative integer"),
        (
            "kv_cache_cpu_memory_utilization: 2\n",
            "kv_cache_cpu_memory_utilization must be a number from 0 to 1",
        ),
    ],
)
def test_bad_upstream_keys(tmp_path: Path, yaml_text: str, needle: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=needle):
        parse_settings(["--kaito-config-file", str(cfg)])


def test_default_gpu_memory_utilization_as_upstream() -> None:
    from kaito.inference.config import default_gpu_memory_utilization

    gib = 1 << 30
    assert default_gpu_memory_utilization(80 * gib, 80 * gib) == 0.95  # capped
    # 40 GiB free of 80: (40 GiB - 600 MiB) / 80 GiB = 0.4926... floored to 0.49
    assert default_gpu_memory_utilization(40 * gib, 80 * gib) == 0.49


def test_multi_node_rank_comes_from_pod_index(monkeypatch: pytest.MonkeyPatch) -> None:
    from kaito.presets import estimate, get_preset, get_sku

    plan = estimate(get_preset("llama-3.3-70b-instruct"), get_sku("Standard_NC48ads_A100_v4"))  # type: ignore[arg-type]
    assert plan.node_count == 2
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in plan.vllm_args().items()]
    argv = ["--model", "/m", *flags, "--master-addr", "ws-0.ws-headless.default.svc"]
    monkeypatch.setenv("POD_INDEX", "0")
    _, leader = vllm_args(argv)
    assert (leader.nnodes, leader.node_rank, leader.headless) == (2, 0, False)
    assert leader.master_port == 29500 and leader.distributed_executor_backend == "mp"
    assert (leader.tensor_parallel_size, leader.pipeline_parallel_size) == (2, 2)
    monkeypatch.setenv("POD_INDEX", "1")
    _, worker = vllm_args(argv)
    assert (worker.node_rank, worker.headless) == (1, True)
    monkeypatch.delenv("POD_INDEX")
    with pytest.raises(ConfigError, match="needs this pod's rank: set POD_INDEX"):
        parse_settings(argv)
    with pytest.raises(ConfigError, match="needs --master-addr"):
        parse_settings(["--nnodes", "2", "--node-rank", "0"])


def test_upstream_default_configmap_starts_the_server(assets: Assets, tmp_path: Path) -> None:
    """Upstream's ConfigMap unchanged, upstream's flag names: the server loads, serves, and counts
    rate-limit rejections under upstream's metric name."""
    import asyncio

    import httpx
    from tests.inference.conftest import start_server, stop, wait_ready

    log = tmp_path / "server.log"
    args = [
        "--model",
        str(assets.model),
        "--kaito-config-file",
        str(upstream_config(tmp_path)),
        "--kaito-adapters-dir",
        str(assets.adapters_dir),
        "--served-model-name",
        "tiny-phi3",
        "--dtype",
        "float32",
        "--max-num-seqs",
        "1",
        "--max-queue",
        "0",
    ]
    from tests.inference.conftest import cpu_env

    # as in a pod: one JSON object per log line, whoever logged it (kaito, vLLM, uvicorn)
    proc, url = start_server(args, log, env={**cpu_env(), "KAITO_LOG_FORMAT": "json"})
    codes: list[int] = []
    try:
        wait_ready(proc, url, log, codes)
        text = log.read_text(errors="replace")
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        others = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
        said = {r["msg"] for r in records}
        # Not from a logger, so not formatted: tqdm's progress bars and torch's C++ warnings
        # ("[W1207 ...] Warning: ...") write to the stream directly. An engine process vLLM starts
        # logs its first import-time warning before vLLM applies the logging config there; that
        # text is also logged, formatted, by the server process.
        assert all("it/s]" in line or line.startswith("[W") or line in said for line in others), others[:5]
        assert all(list(r)[:4] == ["ts", "level", "logger", "msg"] for r in records), records[:3]
        loggers = {r["logger"].split(".")[0] for r in records}
        assert {"kaito", "vllm"} <= loggers, loggers
        assert any(
            r["level"] == "warning" and "ignoring vLLM argument swap-space" in r["msg"] for r in records
        )
        card = next(m for m in httpx.get(url + "/v1/models").json()["data"] if m["id"] == "tiny-phi3")
        assert 0 < card["max_model_len"] <= 2048  # fitted ("auto"), at most the model's own limit
        chat = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "tiny-phi3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=300,
        )
        assert chat.status_code == 200, chat.text
        resp = httpx.post(
            url + "/v1/responses",
            json={"model": "tiny-phi3", "input": "hi", "max_output_tokens": 4},
            timeout=300,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["object"] == "response"

        async def overload() -> int:
            body = {"model": "tiny-phi3", "prompt": "x", "max_tokens": 64, "ignore_eos": True, "stream": True}
            async with (
                httpx.AsyncClient(timeout=300) as client,
                client.stream("POST", url + "/v1/completions", json=body) as first,
            ):
                assert first.status_code == 200
                async for _ in first.aiter_bytes():  # the first request is now in flight
                    second = await client.post(url + "/v1/completions", json={**body, "stream": False})
                    return second.status_code
            return 0

        assert asyncio.run(overload()) == 429
        metrics = httpx.get(url + "/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("kaito_ratelimit_rejected_total"))
        assert float(line.split()[-1]) >= 1
    finally:
        stop(proc)


@pytest.mark.timeout(2400)  # two engines and two workers share this machine's CPUs
def test_two_node_plan_runs_as_two_servers(assets: Assets, tmp_path: Path) -> None:
    """The estimator's cross-node backend, for real: two server processes with the same command
    line, ranks from POD_INDEX, pipeline stages over vLLM's multi-node mp executor (gloo on CPU).
    Rank 0 answers; rank 1 runs the headless workers and opens no HTTP port."""
    import time

    import httpx
    from tests.inference.conftest import free_port, start_server, stop

    common = [
        "--model",
        str(assets.model),
        "--served-model-name",
        "tiny-phi3",
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "2",
        "--pipeline-parallel-size",
        "2",
        "--nnodes",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
    ]
    worker_log, leader_log = tmp_path / "rank1.log", tmp_path / "rank0.log"
    worker, _ = start_server(common, worker_log, env=cpu_env(POD_INDEX="1"))
    leader, url = start_server(common, leader_log, env=cpu_env(POD_INDEX="0"))
    try:
        deadline = time.monotonic() + 2000
        while True:  # wait on the leader's /health; either process exiting fails at once
            for proc, log in ((leader, leader_log), (worker, worker_log)):
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, leader_log.read_text(errors="replace")[-3000:]
            time.sleep(2)
        assert "node rank 1: running vLLM's headless workers" in worker_log.read_text(errors="replace")
        r = httpx.post(
            url + "/v1/completions",
            json={"model": "tiny-phi3", "prompt": "hi", "max_tokens": 4, "ignore_eos": True},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
    finally:
        stop(leader)
        stop(worker)


def test_performance_mode_from_the_controllers_command_reaches_vllm() -> None:
    """kaito.sh/performance-mode: the controller writes --performance-mode on the command line; it
    is not one of the server's flags, so it must arrive in vLLM's own parser unchanged."""
    from kaito.contract.pod import InferenceCommand

    cmd = InferenceCommand(
        preset="phi-3-mini-4k-instruct",
        instance_type="Standard_NC6s_v3",
        config_file=None,
        engine_args={"performance_mode": "throughput"},
    ).argv()
    _, a = vllm_args(["--model", "/m", *cmd[3:]])
    assert a.performance_mode == "throughput"
    _, default = vllm_args(["--model", "/m", "--preset", "phi-3-mini-4k-instruct"])
    assert default.performance_mode == "balanced"  # vLLM's default, as upstream's
