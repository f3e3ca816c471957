"""The Python side of the client-go peer (bench/_clientgo.py) and the pure parsing in
bench/informer_scale.py: what they read from the peer, /proc and etcdctl decides every figure
the comparison reports, so a misread must fail loudly rather than yield a wrong number."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """bench/_clientgo.py and bench/informer_scale.py, imported as the benchmark scripts import
    each other (bench/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("_clientgo"), importlib.import_module("informer_scale")


def test_the_result_is_the_last_result_line(bench: tuple[ModuleType, ModuleType]) -> None:
    clientgo, _ = bench
    out = "\n".join(
        [
            json.dumps({"kind": "result", "t0": 1.0}),  # an earlier result is superseded
            "W1207 some diagnostic line",
            json.dumps({"kind": "progress", "count": 3}),
            json.dumps({"kind": "result", "t0": 2.0, "t_last": 3.5}),
            "{not json",
            "",
        ]
    )
    assert clientgo.parse_result(out) == {"kind": "result", "t0": 2.0, "t_last": 3.5}


def test_output_without_a_result_line_is_an_error(bench: tuple[ModuleType, ModuleType]) -> None:
    clientgo, _ = bench
    with pytest.raises(ValueError, match="no result line"):
        clientgo.parse_result(json.dumps({"kind": "progress"}) + "\n[1, 2]\n")


def test_the_source_hash_follows_every_file_go_build_reads(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    clientgo, _ = bench
    for name, text in {"go.mod": "module m\n", "go.sum": "", "main.go": "package main\n"}.items():
        (tmp_path / name).write_text(text)
    first = clientgo.source_hash(tmp_path)
    (tmp_path / "README").write_text("not read by go build")
    assert clientgo.source_hash(tmp_path) == first
    (tmp_path / "main.go").write_text("package main\n\nfunc main() {}\n")
    changed = clientgo.source_hash(tmp_path)
    assert changed != first
    (tmp_path / "go.sum").write_text("k8s.io/client-go v0.37.2 h1:x\n")
    assert clientgo.source_hash(tmp_path) != changed


def test_the_committed_peer_source_hashes(bench: tuple[ModuleType, ModuleType]) -> None:
    clientgo, _ = bench
    assert len(clientgo.source_hash()) == 16  # the cache folder's name: clientgo-peer-<hash>


def test_proc_status_fields_are_read_in_kib(bench: tuple[ModuleType, ModuleType]) -> None:
    _, scale = bench
    status = "Name:\tpython\nVmPeak:\t  500000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\n"
    assert scale.proc_status_kib(status, "VmHWM") == 123456
    assert scale.proc_status_kib(status, "VmRSS") == 99999
    with pytest.raises(KeyError):
        scale.proc_status_kib(status, "VmSwap")


def test_proc_status_of_this_process(bench: tuple[ModuleType, ModuleType]) -> None:
    _, scale = bench
    status = Path("/proc/self/status").read_text()
    assert scale.proc_status_kib(status, "VmHWM") >= scale.proc_status_kib(status, "VmRSS") > 0


def test_etcd_db_size_from_endpoint_status(bench: tuple[ModuleType, ModuleType]) -> None:
    _, scale = bench
    status = [
        {
            "Endpoint": "http://127.0.0.1:2379",
            "Status": {
                "header": {"revision": 42},
                "version": "3.7.3",
                "dbSize": 1961984,
                "dbSizeInUse": 1900544,
            },
        }
    ]
    assert scale.etcd_db_bytes(json.dumps(status)) == 1961984


def test_figures_per_object_from_kib(bench: tuple[ModuleType, ModuleType]) -> None:
    _, scale = bench
    res = {"sync_seconds": 2.5, "rss_before_kib": 10_000, "rss_after_kib": 20_000, "hwm_kib": 30_000}
    got = scale.figures(res, 1024)
    assert got["sync_seconds"] == 2.5
    assert got["bytes_per_object"] == 10_000  # 10,000 KiB over 1,024 objects
    assert got["peak_bytes_per_object"] == 20_000
    assert got["peak_rss_mb"] == pytest.approx(30_000 / 1024)
