"""An adapter image in the local registry (hack/registry.sh: TLS, basic auth) is pulled with the
pod's imagePullSecret by kaito's tuning program, and the adapter init container copies its
/data files as the workspace controller's init container does."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, AgentProcess, container_status, get_pod, pod_manifest, wait_for
from kaito.runtime import Client

IPY = REPO / ".venv-inference" / "bin" / "python"


@pytest.fixture(scope="module")
def registry(agent: AgentProcess) -> Iterator[dict[str, str]]:
    script = REPO / "hack" / "registry.sh"
    out = subprocess.run(
        ["bash", str(script), "start", str(agent.registry_dir)], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in (agent.registry_dir / "registry.env").read_text().split())
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop", str(agent.registry_dir)], timeout=60)


async def test_adapter_image_is_pulled_and_copied(
    kclient: Client, local_node: str, registry: dict[str, str], tmp_path: Path, agent: AgentProcess
) -> None:
    host = registry["REGISTRY_HOST"]
    image = f"{host}/adapters/tiny:0.1"
    results = tmp_path / "results"
    results.mkdir()
    (results / "adapter_config.json").write_text('{"r": 8, "peft_type": "LORA"}')
    (results / "adapter_model.safetensors").write_bytes(b"weights")
    auth = base64.b64encode(f"{registry['REGISTRY_USER']}:{registry['REGISTRY_PASSWORD']}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}})
    (tmp_path / "config.json").write_text(config)
    push = await asyncio.create_subprocess_exec(
        str(IPY), "-m", "kaito.tuning", "push", "--image", image, "--results", str(results),
        "--docker-config", str(tmp_path / "config.json"), "--ca-file", registry["REGISTRY_CA"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await push.communicate()
    assert push.returncode == 0, err.decode()
    ns = f"adapter-{tmp_path.name[-6:].lower().replace('_', '-')}".strip("-")
    await kclient.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await kclient.create(
        {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "regcred", "namespace": ns},
            "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
        }
    )  # fmt: skip
    mount = [{"name": "adapters", "mountPath": "/mnt/adapter"}]
    init = {
        "name": "adapter-tiny",
        "image": image,
        "command": ["sh", "-c", "mkdir -p /mnt/adapter/tiny && cp -r /data/. /mnt/adapter/tiny/"],
        "volumeMounts": mount,
    }
    show = "ls /mnt/adapter/tiny; cat /mnt/adapter/tiny/adapter_config.json"
    pod = pod_manifest(
        "adapter", local_node, {"command": ["sh", "-c", show], "volumeMounts": mount},
        initContainers=[init], restartPolicy="Never", imagePullSecrets=[{"name": "regcred"}],
        volumes=[{"name": "adapters", "emptyDir": {}}],
    )  # fmt: skip
    pod["metadata"]["namespace"] = ns
    await kclient.create(pod)
    missing = pod_manifest("missing", local_node, {"image": f"{host}/adapters/nope:9", "command": ["true"]},
                           imagePullSecrets=[{"name": "regcred"}])  # fmt: skip
    missing["metadata"]["namespace"] = ns
    await kclient.create(missing)

    async def finished() -> dict[str, Any] | None:
        p = await get_pod(kclient, "adapter", ns)
        return p if (p or {}).get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    done = await wait_for(finished, "the adapter pod to finish", timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    inits = done["status"]["initContainerStatuses"]
    assert inits[0]["state"]["terminated"]["exitCode"] == 0

    async def pull_error() -> dict[str, Any]:
        waiting = (container_status(await get_pod(kclient, "missing", ns)).get("state") or {}).get(
            "waiting"
        ) or {}
        return waiting if waiting.get("reason") == "ErrImagePull" else {}

    waiting = await wait_for(pull_error, "ErrImagePull for a missing tag", timeout=120)
    assert f"{host}/adapters/nope:9" in waiting["message"]
    out = _main_log(agent, ns)
    assert "adapter_model.safetensors" in out and '"peft_type": "LORA"' in out


def _main_log(agent: AgentProcess, ns: str) -> str:
    return (
        next((agent.state_dir / "pods").glob(f"{ns}_adapter_*")).joinpath("logs", "main", "0.log").read_text()
    )
