"""``kaito local up --node real --registry``: a registry on the node's host address, TLS by the
cluster CA, no credentials; an image pushed there is pulled by the node's containerd for a Pod
(no ``ctr import``, no pull secret), and ``down`` stops the registry with the cluster."""

from __future__ import annotations

import json
import ssl
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from kaito.envtest import local as local_cluster
from kaito.envtest.oci import program_image
from kaito.envtest.realnode import missing_requirements

pytestmark = [pytest.mark.cluster]


def push_archive(archive: Path, host: str, repo: str, tag: str, ca: str) -> None:
    """Push an OCI archive's one image to ``host`` with the registry API (monolithic uploads)."""
    ctx = ssl.create_default_context(cafile=ca)
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    manifest_desc = index["manifests"][0]
    manifest = files["blobs/sha256/" + manifest_desc["digest"].split(":", 1)[1]]
    blobs = [json.loads(manifest)["config"], *json.loads(manifest)["layers"]]
    for desc in blobs:
        data = files["blobs/sha256/" + desc["digest"].split(":", 1)[1]]
        start = urllib.request.Request(f"https://{host}/v2/{repo}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(start, context=ctx) as r:
            location = r.headers["Location"]
        sep = "&" if "?" in location else "?"
        url = location if location.startswith("https://") else f"https://{host}{location}"
        put = urllib.request.Request(f"{url}{sep}digest={desc['digest']}", data=data, method="PUT")
        put.add_header("Content-Type", "application/octet-stream")
        urllib.request.urlopen(put, context=ctx).close()
    put = urllib.request.Request(f"https://{host}/v2/{repo}/manifests/{tag}", data=manifest, method="PUT")
    put.add_header("Content-Type", manifest_desc["mediaType"])
    urllib.request.urlopen(put, context=ctx).close()


def kubectl(state: local_cluster.LocalState, *args: str) -> str:
    return subprocess.run(
        [state.kubectl, "--kubeconfig", state.kubeconfig, *args], capture_output=True, text=True, check=True
    ).stdout


def test_registry_on_the_node_address_serves_the_node_pulls(tmp_path: Path) -> None:
    assert not missing_requirements(), missing_requirements()
    root = tmp_path / "local"
    state = local_cluster.up(root, real_node=True, registry=True)
    try:
        address = state.server.split("//", 1)[1].rsplit(":", 1)[0]
        assert state.registry.startswith(address + ":"), (state.registry, state.server)
        assert "registry" in state.pids
        hosts = root / "real-node" / "containerd" / "certs.d" / state.registry / "hosts.toml"
        assert f'ca = "{state.registry_ca}"' in hosts.read_text()
        ref = f"{state.registry}/kaito/hello:1"
        push_archive(program_image("hello", ref, tmp_path / "img"), state.registry, "kaito/hello", "1",
                     state.registry_ca)  # fmt: skip
        kubectl(state, "run", "web", "--restart=Never", f"--image={ref}", "--image-pull-policy=Always",
                "--", "serve", "8080")  # fmt: skip
        deadline = time.monotonic() + 90
        while kubectl(state, "get", "pod", "web", "-o", "jsonpath={.status.phase}") != "Running":
            assert time.monotonic() < deadline, kubectl(state, "describe", "pod", "web")
            time.sleep(0.5)
        events = kubectl(state, "get", "events", "--field-selector", "involvedObject.name=web,reason=Pulled",
                         "-o", "jsonpath={.items[*].message}")  # fmt: skip
        assert f'Successfully pulled image "{ref}"' in events
    finally:
        local_cluster.down(root)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"https://{state.registry}/v2/", timeout=2,
                               context=ssl.create_default_context(cafile=state.registry_ca))  # fmt: skip
