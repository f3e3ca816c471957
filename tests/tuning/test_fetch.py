"""The dataset downloader: streamed, capped, typed, and never aimed inside the cluster."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.tuning.conftest import DataServer, conversations, last_line, run_tuning, write_parquet

ALLOW = ("--insecure-allow-address", "127.0.0.1")


def test_fetch_parquet_byte_for_byte(tmp_path: Path, data_server: DataServer) -> None:
    src = write_parquet(data_server.root / "train-0001.parquet", conversations(20))
    dest = tmp_path / "data"
    proc = run_tuning(
        "fetch", "--url", f"{data_server.url}/train-0001.parquet?download=true", "--dest", str(dest), *ALLOW
    )
    assert proc.returncode == 0, proc.stderr
    assert (dest / "train-0001.parquet").read_bytes() == src.read_bytes()
    assert not list(dest.glob("*.part"))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata address"),
        ("http://10.0.0.7/data.parquet", "private address"),
        ("http://[::1]:8080/data.parquet", "loopback address"),
        ("http://2130706433/data.parquet", "loopback address"),
        ("http://0x7f.1/data.parquet", "loopback address"),
        ("http://0251.0376.0251.0376/latest", "cloud metadata address"),
        ("file:///etc/passwd", "must use http or https"),
    ],
)
def test_private_and_metadata_urls_are_refused(tmp_path: Path, url: str, why: str) -> None:
    proc = run_tuning("fetch", "--url", url, "--dest", str(tmp_path / "data"))
    assert proc.returncode == 1
    assert why in last_line(proc) and last_line(proc).startswith("kaito-tuning: ")
    assert not any((tmp_path / "data").glob("*")) if (tmp_path / "data").exists() else True


def test_loopback_is_refused_unless_explicitly_allowed(tmp_path: Path, data_server: DataServer) -> None:
    write_parquet(data_server.root / "x.parquet", conversations(2))
    proc = run_tuning("fetch", "--url", f"{data_server.url}/x.parquet", "--dest", str(tmp_path))
    assert proc.returncode == 1 and "loopback address" in last_line(proc)


def test_redirect_to_metadata_is_refused(tmp_path: Path, data_server: DataServer) -> None:
    url = f"{data_server.url}/redirect/169.254.169.254/latest/meta-data/iam"
    proc = run_tuning("fetch", "--url", url, "--dest", str(tmp_path / "d"), *ALLOW)
    assert proc.returncode == 1
    assert "169.254.169.254" in last_line(proc) and "metadata" in last_line(proc)


def test_name_resolving_to_an_inside_address_is_refused(tmp_path: Path, data_server: DataServer) -> None:
    # The machine's own name resolves to a loopback or private address (never checked by spelling).
    port = data_server.url.rsplit(":", 1)[1]
    host = socket.gethostname()
    proc = run_tuning("fetch", "--url", f"http://{host}:{port}/x.parquet", "--dest", str(tmp_path))
    assert proc.returncode == 1
    assert f"{host} resolves to " in last_line(proc) and "address; use a public URL" in last_line(proc)


@pytest.mark.parametrize("prefix", ["", "nolength/"])
def test_oversized_file_is_refused_and_nothing_is_left(
    tmp_path: Path, data_server: DataServer, prefix: str
) -> None:
    size = write_parquet(data_server.root / "big.parquet", conversations(500)).stat().st_size
    cap = str(size // 2)
    dest = tmp_path / "data"
    proc = run_tuning(
        "fetch",
        "--url",
        f"{data_server.url}/{prefix}big.parquet",
        "--dest",
        str(dest),
        "--max-bytes",
        cap,
        *ALLOW,
    )
    assert proc.returncode == 1
    assert f"{cap}-byte limit" in last_line(proc)
    assert list(dest.iterdir()) == []


def test_html_page_is_refused(tmp_path: Path, data_server: DataServer) -> None:
    proc = run_tuning("fetch", "--url", f"{data_server.url}/login.html", "--dest", str(tmp_path), *ALLOW)
    assert proc.returncode == 1
    assert "served as text/html, not a dataset file" in last_line(proc)


def test_missing_file_names_the_status(tmp_path: Path, data_server: DataServer) -> None:
    proc = run_tuning("fetch", "--url", f"{data_server.url}/nope.parquet", "--dest", str(tmp_path), *ALLOW)
    assert proc.returncode == 1 and "HTTP 404" in last_line(proc)
