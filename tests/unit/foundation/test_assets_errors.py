"""Bad input to the control-plane set-up fails fast with one line that says what to do."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from kaito.envtest import AssetsError, Cluster, ClusterError, ClusterOptions, ensure_assets
from kaito.envtest import assets as assets_mod


def test_kubebuilder_assets_not_a_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "nope"))
    with pytest.raises(AssetsError) as err:
        ensure_assets()
    msg = str(err.value)
    assert "\n" not in msg
    assert "is not a directory" in msg and "unset it" in msg


def test_kubebuilder_assets_missing_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "etcd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(AssetsError) as err:
        ensure_assets(["etcd", "kube-apiserver"])
    assert "lacks kube-apiserver" in str(err.value)
    assert "etcd," not in str(err.value)


def test_no_go_toolchain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KAITO_ASSETS", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no `go` anywhere
    started = time.monotonic()
    with pytest.raises(AssetsError) as err:
        ensure_assets()
    assert time.monotonic() - started < 2
    msg = str(err.value)
    assert "no Go toolchain" in msg and "KUBEBUILDER_ASSETS" in msg and "\n" not in msg


def test_no_build_allowed_names_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KAITO_ASSETS", str(tmp_path))
    with pytest.raises(AssetsError) as err:
        ensure_assets(build=False)
    assert "kaito local assets" in str(err.value)


def test_port_in_use_fails_fast() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            Cluster(ClusterOptions(apiserver_port=port)).start()
        assert time.monotonic() - started < 2
    msg = str(err.value)
    assert f"port {port}" in msg and "already in use" in msg and "\n" not in msg


def test_staging_modules_pinned_from_upstream_gomod() -> None:
    gomod = (
        "module k8s.io/kubernetes\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/x/y => github.com/x/y v1.0.0\n)\n"
        "replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl\n"
    )
    assert assets_mod._relative_replaces(gomod) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/kubectl"]
