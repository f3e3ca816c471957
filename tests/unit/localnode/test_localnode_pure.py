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
from kaito.localnode.images import ImagePullError, ImageResolver, interpreter_paths, repository
from kaito.localnode.pods import ConfigError, RunAs, expand, run_as, secret_file_mode, subpath
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


def test_secret_files_for_an_fs_group_or_several_users() -> None:
    assert secret_file_mode(0o644, group=True) == 0o440  # the kubelet's fsGroup: group may read
    assert secret_file_mode(0o644, shared=True) == 0o444  # several users, no fsGroup: as asked
    assert secret_file_mode(0o600, shared=True) == 0o400


POD = "p_ns(uid)"


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "expected"),
    [
        ({}, {}, RunAs(0, 0, [0], [])),  # the image's user: root, without capabilities
        ({"runAsUser": 1000, "runAsGroup": 3000}, {}, RunAs(1000, 3000, [3000], [])),
        ({"runAsUser": 1000, "runAsGroup": 3000}, {"runAsUser": 2000}, RunAs(2000, 3000, [3000], [])),
        ({"runAsNonRoot": True, "runAsUser": 7, "runAsGroup": 7, "fsGroup": 9, "supplementalGroups": [8]}, {},
         RunAs(7, 7, [7, 8, 9], [])),
        ({}, {"capabilities": {"add": ["CAP_NET_BIND_SERVICE"]}, "readOnlyRootFilesystem": True},
         RunAs(0, 0, [0], [10], read_only_root=True)),
    ],
)  # fmt: skip
def test_run_as_follows_the_pod_then_the_container(pod_sc: dict, container_sc: dict, expected: RunAs) -> None:
    spec = {"securityContext": pod_sc}
    assert run_as(spec, {"name": "main", "securityContext": container_sc}, POD) == expected


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "field"),
    [
        ({"runAsNonRoot": True}, {}, "no securityContext.runAsUser is set"),
        ({"runAsNonRoot": True, "runAsUser": 0}, {}, "securityContext.runAsUser is 0"),
        ({"runAsUser": 1000}, {"runAsNonRoot": True, "runAsUser": 0}, "securityContext.runAsUser is 0"),
        ({}, {"privileged": True}, "securityContext.privileged"),
        ({}, {"capabilities": {"add": ["SYS_ADMIN"]}}, "securityContext.capabilities.add: SYS_ADMIN"),
    ],
)
def test_run_as_refuses_naming_the_field(pod_sc: dict, container_sc: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        run_as({"securityContext": pod_sc}, {"name": "main", "securityContext": container_sc}, POD)
    assert "'p_ns(uid)'" in str(err.value) and "container: main" in str(err.value)


def test_sub_path_may_not_leave_its_volume(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    (vol / "dir").mkdir(parents=True)
    (vol / "root").symlink_to("/")
    (vol / "inside").symlink_to("dir")
    assert subpath(str(vol), "dir") == str(vol / "dir")
    assert subpath(str(vol), "inside") == str(vol / "dir")
    for escape in ("root", "root/etc", "../"):
        with pytest.raises(ConfigError, match="resolves outside its volume"):
            subpath(str(vol), escape)


def test_an_images_interpreter_brings_its_installation_and_pth_folders(tmp_path: Path) -> None:
    venv, home, src = tmp_path / "venv", tmp_path / "py" / "3.11", tmp_path / "src"
    site = venv / "lib" / "python3.11" / "site-packages"
    for d in (site, home / "bin", src):
        d.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {home / 'bin'}\nversion = 3.11.7\n")
    (site / "__editable__.x.pth").write_text(f"{src}\n{tmp_path / 'missing'}\n")
    (site / "hook.pth").write_text("import os\n")
    assert interpreter_paths(venv) == [str(venv), str(home), str(src)]
