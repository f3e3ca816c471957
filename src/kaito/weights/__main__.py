"""``python -m kaito.weights pull|push``: the weights client without the ``kaito`` CLI around it.

Why a second entry point: ``kaito`` imports every command group (the controller's among them),
seconds of start-up on a small machine; a puller run once per pod start, or timed by
bench/weights.py, should pay only for what it uses. Same flags and output as ``kaito models``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kaito.weights.registry import RegistryClient, WeightsError
from kaito.weights.transfer import DEFAULT_CONCURRENCY, pull_folder, push_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("pull", "push"):
        p = sub.add_parser(name)
        if name == "pull":
            p.add_argument("image")
            p.add_argument("dest", type=Path)
        else:
            p.add_argument("folder", type=Path)
            p.add_argument("image")
            p.add_argument("--model")
        p.add_argument("--registry-config", type=Path)
        p.add_argument("--ca-file", type=Path)
        p.add_argument("--plain-http", action="store_true")
        p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ns = parser.parse_args(argv)
    try:
        client = RegistryClient.for_image(
            ns.image, registry_config=ns.registry_config, ca_file=ns.ca_file, plain_http=ns.plain_http
        )
        if ns.cmd == "pull":
            result = pull_folder(client, ns.dest, concurrency=ns.concurrency)
        else:
            result = push_folder(client, ns.folder, model=ns.model, concurrency=ns.concurrency)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{ns.cmd}ed {result.image}@{result.digest}: {result.files} files, {result.moved} moved "
        f"({result.bytes_moved / 1e6:.1f} MB, {result.mb_per_s:.1f} MB/s), {result.skipped} already there"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
