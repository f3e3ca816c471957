"""Command line of ``python -m kaito.tuning``: one subcommand per container of a tuning Job.

Every subcommand ends in one of two ways: exit 0, or exit 1 with one line ``kaito-tuning: <why>``
on stderr (the Job's failure reason). ``train`` also writes FAILED_MARKER so that a pusher waiting
for the adapter stops instead of waiting forever.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kaito.contract import DATA_DIR, RESULTS_DIR
from kaito.contract.tuning import DOCKER_CONFIG_KEY, ENV_DATA_URLS, FAILED_MARKER, PUSH_SECRET_DIR
from kaito.contract.urls import redact_urls
from kaito.tuning.errors import TuningError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kaito.tuning", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    f = sub.add_parser("fetch", help="download dataset URLs into the data folder")
    f.add_argument(
        "--url", action="append", default=[], help=f"a dataset URL (repeatable; else ${ENV_DATA_URLS})"
    )
    f.add_argument("--dest", type=Path, default=Path(DATA_DIR))
    f.add_argument("--max-bytes", type=int, default=None, help="size cap per file")
    f.add_argument("--ca-file", default=None)
    f.add_argument(
        "--insecure-allow-address",
        action="append",
        default=[],
        help="waive the private-address rule for this IP (tests only; never set by the operator)",
    )

    pl = sub.add_parser("pull", help="copy an input image's data folder into the data folder")
    pl.add_argument("--image", required=True)
    pl.add_argument("--dest", type=Path, default=Path(DATA_DIR))
    pl.add_argument("--docker-config", type=Path, default=None)
    pl.add_argument("--ca-file", default=None)
    pl.add_argument("--plain-http", action="store_true")
    pl.add_argument("--max-layer-bytes", type=int, default=None, help="download cap per layer")
    pl.add_argument("--max-data-bytes", type=int, default=None, help="cap of the unpacked data, in all")
    pl.add_argument(
        "--insecure-allow-address",
        action="append",
        default=[],
        help="let blob redirects reach this private IP (tests only; never set by the operator)",
    )

    t = sub.add_parser("train", help="LoRA/QLoRA training; the adapter goes to --output")
    t.add_argument("--model", type=Path, required=True, help="folder of the base model (weights + tokenizer)")
    t.add_argument("--method", choices=("lora", "qlora"), default="lora")
    t.add_argument("--config", type=Path, default=None, help="training_config.yaml (missing file: defaults)")
    t.add_argument("--data", type=Path, default=Path(DATA_DIR))
    t.add_argument("--output", type=Path, default=Path(RESULTS_DIR))
    t.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: none)")
    t.add_argument("--metrics-addr", default="0.0.0.0")

    ps = sub.add_parser("push", help="push the adapter in --results as an OCI image")
    ps.add_argument("--image", required=True)
    ps.add_argument("--results", type=Path, default=Path(RESULTS_DIR))
    ps.add_argument("--docker-config", type=Path, default=Path(PUSH_SECRET_DIR) / DOCKER_CONFIG_KEY)
    ps.add_argument("--wait", action="store_true", help="wait for training to finish first")
    ps.add_argument("--wait-timeout", type=float, default=0, help="seconds (0: no limit)")
    ps.add_argument("--model-name", default=None, help="base model recorded in the manifest")
    ps.add_argument("--ca-file", default=None)
    ps.add_argument("--plain-http", action="store_true")
    return p


def _fetch(ns: argparse.Namespace) -> None:
    from kaito.tuning.fetch import DEFAULT_MAX_BYTES, FetchOptions, fetch_all

    urls = list(ns.url) or os.environ.get(ENV_DATA_URLS, "").split()
    if not urls:
        raise TuningError(f"no URLs: pass --url or set {ENV_DATA_URLS}")
    opts = FetchOptions(
        max_bytes=ns.max_bytes or DEFAULT_MAX_BYTES,
        allow_addresses=_allowed(ns.insecure_allow_address),
        ca_file=ns.ca_file,
        progress=lambda line: print(redact_urls(line), flush=True),
    )
    fetch_all(urls, ns.dest, opts)


def _train(ns: argparse.Namespace) -> None:
    from kaito.tuning.config import load_config
    from kaito.tuning.metrics import Progress

    progress = Progress()
    try:
        config = ns.config if ns.config is not None and ns.config.exists() else None
        if ns.config is not None and config is None:
            progress.log("config", note=f"{ns.config} not found; using the {ns.method} defaults")
        cfg = load_config(ns.method, config)
        if ns.metrics_port:
            progress.serve(ns.metrics_port, ns.metrics_addr)
        from kaito.tuning.trainer import train

        result = train(ns.model, ns.data, ns.output, cfg, progress)
        progress.log(
            "done",
            steps=result.steps,
            first_loss=result.losses[0] if result.losses else None,
            last_loss=result.losses[-1] if result.losses else None,
            tokens=result.tokens,
            tokens_per_s=round(result.tokens_per_s, 1),
            adapter=str(result.adapter_dir),
        )
    except BaseException as exc:
        try:
            ns.output.mkdir(parents=True, exist_ok=True)
            (ns.output / FAILED_MARKER).write_text(f"{redact_urls(str(exc))}\n")
        except OSError:
            pass
        raise


def _push(ns: argparse.Namespace) -> None:
    from kaito.tuning.oci import Registry, push_adapter, wait_for_adapter

    if ns.wait:
        wait_for_adapter(ns.results, ns.wait_timeout or None)
    registry = Registry.for_image(ns.image, ns.docker_config, ca_file=ns.ca_file, plain_http=ns.plain_http)
    digest = push_adapter(registry, ns.results, ns.image, model_name=ns.model_name)
    print(f"pushed {ns.image}@{digest}", flush=True)


def _allowed(addresses: list[str]) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return frozenset(ipaddress.ip_address(a) for a in addresses)
    except ValueError as exc:
        raise TuningError(f"--insecure-allow-address: {exc}") from None


def _pull(ns: argparse.Namespace) -> None:
    from kaito.tuning.oci import (
        DEFAULT_MAX_DATA_BYTES,
        DEFAULT_MAX_LAYER_BYTES,
        PullLimits,
        Registry,
        pull_data,
    )

    limits = PullLimits(
        max_layer_bytes=ns.max_layer_bytes or DEFAULT_MAX_LAYER_BYTES,
        max_data_bytes=ns.max_data_bytes or DEFAULT_MAX_DATA_BYTES,
        allow_addresses=_allowed(ns.insecure_allow_address),
    )
    registry = Registry.for_image(ns.image, ns.docker_config, ca_file=ns.ca_file, plain_http=ns.plain_http)
    files = pull_data(registry, ns.image, ns.dest, limits)
    print(f"pulled {ns.image}: {len(files)} files into {ns.dest}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        {"fetch": _fetch, "train": _train, "push": _push, "pull": _pull}[ns.cmd](ns)
    except TuningError as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:
        _fail(f"{ns.cmd} failed ({type(exc).__name__}: {exc})".splitlines()[0])
        return 1
    return 0


def _fail(why: str) -> None:
    """The one failure line (the Job's termination message, then the Workspace's status): URLs in
    it lose their query strings, whichever exception quoted them (presigned URLs' signatures)."""
    print(f"kaito-tuning: {redact_urls(why)}", file=sys.stderr, flush=True)
