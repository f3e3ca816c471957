"""The whole data path of a weights image outside a cluster: ``kaito models push`` of the tiny
model to the real registry, the init container's own script pulling it with the real oras into
a folder (the pod's cache volume), and kaito's server with real vLLM loading ``--model`` from
that folder and answering a chat request. Then the script runs again on the same folder, as a
restarted pod's would, and pulls nothing.

The real-node test (tests/integration/realnode/test_weights_image_real_node.py) runs the same
script in a container on a kubelet; a node there has no GPU and no kaito image, so the serving
half is here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from inference.conftest import start_server, stop, wait_ready
from kaito.contract.tinymodel import cpu_env
from kaito.contract.weights import CACHE_MARKER, WEIGHTS_DIR
from kaito.controllers.workspace.inference.weights import puller_script
from kaito.envtest.orascli import ensure_oras
from kaito.weights import RegistryClient, push_folder

from .conftest import Registry

pytestmark = [pytest.mark.vllm]


def run_puller(image: str, volume: Path, registry: Registry, config: Path, bin_dir: Path) -> str:
    """The init container's script, with the volume at ``volume`` instead of /workspace/weights,
    trusting the registry's CA the way Go programs read one (``SSL_CERT_FILE``)."""
    script = puller_script(image, str(config)).replace(WEIGHTS_DIR, str(volume))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(volume.parent), "SSL_CERT_FILE": registry.ca}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_server_loads_the_model_oras_pulled_from_kaitos_image(
    registry: Registry, tiny_model: Path, tmp_path: Path
) -> None:
    config = registry.docker_config(tmp_path / "auth.json")
    image = f"{registry.host}/weights/serve:v1"
    pushed = push_folder(
        RegistryClient.for_image(image, registry_config=config, ca_file=Path(registry.ca)), tiny_model
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "oras").symlink_to(ensure_oras())
    volume = tmp_path / "volume"
    volume.mkdir()

    assert f"{pushed.digest} pulled" in run_puller(image, volume, registry, config, bin_dir)
    assert (volume / CACHE_MARKER).read_text().strip() == pushed.digest

    log = tmp_path / "server.log"
    args = ["--model", str(volume), "--served-model-name", "tiny-phi3", "--max-model-len", "512",
            "--max-num-seqs", "2", "--dtype", "float32", "--max-num-batched-tokens", "512"]  # fmt: skip
    proc, url = start_server(args, log, cpu_env())
    try:
        wait_ready(proc, url, log, [])
        resp = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "tiny-phi3", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] is not None
    finally:
        stop(proc)

    before = {p.name: p.stat().st_mtime_ns for p in volume.iterdir()}
    assert "already in the cache; nothing pulled" in run_puller(image, volume, registry, config, bin_dir)
    assert {p.name: p.stat().st_mtime_ns for p in volume.iterdir()} == before
