"""The node agent's pure rules: which images run, where weights come from, $(VAR) expansion,
port-forward targets, pod addresses. The sandbox itself is covered by tests/integration/localnode."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kaito.contract import ANNOTATION_STANDIN, DEFAULT_MODEL_DIR
from kaito.envtest.cluster import AGENT_NODE_LABEL as KWOK_SKIPS_LABEL
from kaito.envtest.cluster import AGENT_NODE_VALUE as KWOK_SKIPS_VALUE
from kaito.localnode import AGENT_NODE_LABEL, AGENT_NODE_VALUE, STANDIN_ANNOTATION
from kaito.localnode.images import ImagePullError, ImageResolver, repository
from kaito.localnode.pods import expand, secret_file_mode
from kaito.localnode.portforward import ForwardError, parse_target
from kaito.localnode.sandbox import GATEWAY, NETWORK, ContainerSpec, write_private, write_spec

INFERENCE = "ghcr.io/kaito-project/kaito/inference:0.1.0"


def test_kwok_and_the_agent_agree_on_the_node_label() -> None:
    assert (KWOK_SKIPS_LABEL, KWOK_SKIPS_VALUE) == (AGENT_NODE_LABEL, AGENT_NODE_VALUE)
    assert STANDIN_ANNOTATION == ANNOTATION_STANDIN


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        (INFERENCE, "ghcr.io/kaito-project/kaito/inference"),
        ("localhost:5000/adapters/phi:1", "localhost:5000/adapters/phi"),
        ("busybox", "busybox"),
        ("ghcr.io/x/y@sha256:abc", "ghcr.io/x/y"),
    ],
)
def test_repository_drops_tag_and_digest(image: str, repo: str) -> None:
    assert repository(image) == repo


def _resolver(tmp_path: Path, model_root: Path | None = None) -> ImageResolver:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    return ImageResolver(venv=venv, model_root=model_root, standin_dir=tmp_path / "standin")


def test_unknown_image_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ImagePullError, match=r'Failed to pull image "docker.io/library/nginx:1.27"'):
        _resolver(tmp_path).resolve("docker.io/library/nginx:1.27", ["nginx"])


def test_missing_interpreter_says_how_to_build_it(tmp_path: Path) -> None:
    resolver = ImageResolver(venv=tmp_path / "nope", model_root=None, standin_dir=tmp_path)
    with pytest.raises(ImagePullError, match="make inference-venv"):
        resolver.resolve(INFERENCE, [])


def test_preset_without_local_weights_gets_the_labelled_stand_in(tmp_path: Path) -> None:
    plan = _resolver(tmp_path).resolve(
        INFERENCE, ["python", "-m", "kaito.inference", "--preset", "phi-3-mini-4k-instruct"]
    )
    assert plan.mounts == [(str(tmp_path / "standin"), DEFAULT_MODEL_DIR, True)]
    assert "random-weight stand-in" in plan.standin and "phi-3-mini-4k-instruct" in plan.standin
    assert plan.env["PATH"].startswith(f"{tmp_path / 'venv'}/bin:")


def test_local_weights_are_used_when_present(tmp_path: Path) -> None:
    weights = tmp_path / "models" / "phi-3-mini-4k-instruct"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    plan = _resolver(tmp_path, tmp_path / "models").resolve(INFERENCE, ["--preset=phi-3-mini-4k-instruct"])
    assert plan.mounts == [(str(weights), DEFAULT_MODEL_DIR, True)]
    assert plan.standin == ""


def test_var_expansion_as_kubernetes_does() -> None:
    env = {"POD_INDEX": "2", "A": "x"}
    assert expand("--node-rank=$(POD_INDEX)", env) == "--node-rank=2"
    assert expand("$(MISSING)-$(A)", env) == "$(MISSING)-x"
    assert expand("$$(A)", env) == "$(A)"


@pytest.mark.parametrize(
    ("target", "want"),
    [
        ("svc/ws", ("service", "ws")),
        ("service/ws", ("service", "ws")),
        ("pod/p-0", ("pod", "p-0")),
        ("p-0", ("pod", "p-0")),
    ],
)
def test_port_forward_targets(target: str, want: tuple[str, str]) -> None:
    assert parse_target(target) == want


def test_port_forward_rejects_other_kinds() -> None:
    with pytest.raises(ForwardError, match="svc/NAME or pod/NAME"):
        parse_target("deploy/x")


def test_pod_addresses_are_neither_link_local_nor_loopback() -> None:
    # EndpointSlice validation rejects both, and Services must list local pods
    net = ipaddress.ip_network(NETWORK)
    assert not net.is_link_local and not net.is_loopback and not net.is_global
    assert ipaddress.ip_address(GATEWAY) in net


@pytest.mark.parametrize(
    ("image", "local"),
    [
        ("127.0.0.1:5000/adapters/phi:1", True),
        ("localhost:5000/a:1", True),
        ("localhost/a:1", True),
        ("myacr.azurecr.io/adapters/phi:1", False),
        ("busybox:1", False),
        ("ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1", False),
    ],
)
def test_only_loopback_registries_are_pulled(tmp_path: Path, image: str, local: bool) -> None:
    from kaito.localnode.images import is_local_registry

    assert is_local_registry(image) is local
    if local:
        assert _resolver(tmp_path).resolve(image, ["sh"]).pull
    else:
        with pytest.raises(ImagePullError, match=image.split(":")[0]):
            _resolver(tmp_path).resolve(image, ["sh"])


def test_container_spec_with_secret_env_is_written_0600(tmp_path: Path) -> None:
    """Issue 21 hole 8: the spec file holds Secret env values; it was written with the umask's
    0644. Rewriting it (a restart) keeps 0600, and a symlink planted at its path is replaced, not
    followed."""
    path = tmp_path / "main.spec.json"
    spec = ContainerSpec(argv=["sh"], env={"HF_TOKEN": "hf_planted"}, scratch=str(tmp_path), hostname="p")
    write_spec(spec, path)
    assert path.stat().st_mode & 0o777 == 0o600 and "hf_planted" in path.read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    path.unlink()
    path.symlink_to(elsewhere)
    write_spec(spec, path)
    assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    assert elsewhere.read_text() == "untouched"


def test_private_files_can_be_rewritten_at_0400(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_private(path, b"one", 0o400)
    write_private(path, b"two", 0o400)
    assert path.read_bytes() == b"two" and path.stat().st_mode & 0o777 == 0o400


@pytest.mark.parametrize(
    ("requested", "mode"), [(0o644, 0o400), (0o600, 0o400), (0o755, 0o500), (0o444, 0o400), (0o040, 0o400)]
)
def test_secret_volume_files_are_owner_only_and_read_only(requested: int, mode: int) -> None:
    assert secret_file_mode(requested) == mode
